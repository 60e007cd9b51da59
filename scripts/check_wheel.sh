#!/usr/bin/env bash
# Build the wheel and run it in a fresh venv, away from the source tree: what `pip install
# mmctr` users get must train the shipped presets by name and run an experiment without any
# file of this repository. Usage: scripts/check_wheel.sh [WORK_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/workdir.sh"  # WORK: $1, or a temp dir removed at exit
PYTHON=${PYTHON:-python3}
echo "building the wheel into $WORK/dist"
"$ROOT/.venv/bin/python" -m build --wheel --outdir "$WORK/dist" "$ROOT" > "$WORK/build.log" 2>&1
WHEEL=$(ls "$WORK"/dist/mmctr-*.whl)
LISTING=$(unzip -l "$WHEEL")
grep -q "mmctr/config/presets/paper.toml" <<< "$LISTING" || {
  echo "the wheel lacks the shipped presets" >&2; exit 1; }
grep -q "mmctr/search/spaces/target-transformer.toml" <<< "$LISTING" || {
  echo "the wheel lacks the shipped search spaces" >&2; exit 1; }
grep -q "dist-info/licenses/LICENSE" <<< "$LISTING" || {
  echo "the wheel lacks the licence text (LICENSE)" >&2; exit 1; }
echo "fresh venv with $WHEEL"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet "torch==2.13.0"
"$WORK/venv/bin/pip" install --quiet "torch==2.13.0" "$WHEEL"
cd "$WORK"  # no source tree here: nothing named configs/ or src/
MMCTR="$WORK/venv/bin/mmctr"
VERSION=$(basename "$WHEEL" | cut -d- -f2)  # mmctr-<version>-py3-none-any.whl
[ "$("$MMCTR" --version)" = "mmctr $VERSION" ] || {
  echo "mmctr --version does not print the wheel's version $VERSION" >&2; exit 1; }
"$MMCTR" synth data --preset tiny --seed 1 --force
"$MMCTR" train --data data --config paper --out runs/paper --set train.epochs=1 --no-progress
for file in config summary; do
  grep -q "\"mmctr_version\": \"$VERSION\"" "runs/paper/$file.json" || {
    echo "runs/paper/$file.json does not record mmctr $VERSION" >&2; exit 1; }
done
"$MMCTR" experiment ablation --data data --config cpu --out exp --seeds 1 --quick \
  --variants full,din
# without the search extra, a search says which extra it needs (exit 2) and writes nothing
code=0
"$MMCTR" experiment search --data data --config cpu --space target-transformer --out srch \
  2> search.err || code=$?
[ "$code" -eq 2 ] && grep -q "mmctr\[search\]" search.err && [ ! -e srch ] || {
  echo "search without Optuna: expected exit 2 naming the extra, got $code" >&2
  cat search.err >&2; exit 1; }
"$WORK/venv/bin/python" -c "import mmctr; print('mmctr from', mmctr.__file__)"
echo "wheel check passed"
