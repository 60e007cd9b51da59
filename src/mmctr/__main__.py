import sys

from mmctr.cli.main import main

# guarded: `mmctr serve --workers N` starts workers with multiprocessing's spawn, which imports
# this module again in each of them (as __mp_main__), where it must not run the command
if __name__ == "__main__":
    sys.exit(main())
