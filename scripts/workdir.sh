# Sourced by the check scripts: sets WORK to the folder named by their first argument, or to a
# fresh temp folder that is removed at exit (its venv and runs are 5-11 GB; CI machines run the
# checks again and again and must not fill their disk). Defines `cleanup` and traps it on EXIT;
# a script that sets its own EXIT trap calls `cleanup` from it.
if [ -n "${1:-}" ]; then
  WORK=$1
  OWN_WORK=
else
  WORK=$(mktemp -d)
  OWN_WORK=1
fi
cleanup() { if [ -n "$OWN_WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
mkdir -p "$WORK"
