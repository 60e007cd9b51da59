import sys

from mmctr.cli.main import main

sys.exit(main())
