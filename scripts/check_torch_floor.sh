#!/usr/bin/env bash
# The oldest PyTorch that mmctr admits (the floor of its `torch>=` range in pyproject.toml), in
# a venv of its own: train, kill and resume, evaluate, export (TorchScript, ONNX) and serve one
# request on tiny data. The
# suite itself runs on the pinned build (Makefile); this is the smoke test of the other end of
# the range. Usage: scripts/check_torch_floor.sh [WORK_DIR]
# PyPI's Linux wheel of an old torch is its CUDA build (about 5 GB with its libraries); it runs
# on the CPU here.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/workdir.sh"  # WORK: $1, or a temp dir removed at exit
PYTHON=${PYTHON:-python3}
FLOOR=$(sed -n 's/^ *"torch>=\([0-9.]*\),.*/\1/p' "$ROOT/pyproject.toml")
[ -n "$FLOOR" ] || { echo "no torch>= floor found in pyproject.toml" >&2; exit 1; }
echo "torch floor $FLOOR: a fresh venv in $WORK"
"$PYTHON" -m venv "$WORK/venv"
PIP="$WORK/venv/bin/pip"
"$PIP" install --quiet "torch==$FLOOR"
"$PIP" install --quiet "torch==$FLOOR" "$ROOT[serve,export]"
cd "$WORK"
MMCTR="$WORK/venv/bin/mmctr"
"$WORK/venv/bin/python" -c "import torch, mmctr; print('torch', torch.__version__, 'mmctr', mmctr.__version__)"
"$MMCTR" synth data --preset tiny --seed 1 --force
# killed after its first epoch, then resumed from that checkpoint
"$MMCTR" train --data data --config cpu --out run --set train.epochs=3 --set train.patience=3 \
  --no-progress > train.log 2>&1 &
TRAINER=$!
for _ in $(seq 300); do [ -e run/state.json ] && break; sleep 0.2; done
kill -9 "$TRAINER" 2>/dev/null || true
wait "$TRAINER" 2>/dev/null || true
"$MMCTR" train --out run --resume --data data --no-progress | tee resume.log
grep -q "resuming" resume.log || grep -q "resuming" run/train.log || {
  echo "the resume did not resume" >&2; exit 1; }
"$MMCTR" evaluate --run run --data data --split valid
"$MMCTR" export --run run --out model-ts --format torchscript
"$MMCTR" export --run run --out model-onnx --format onnx
PORT=${PORT:-8765}
"$MMCTR" serve --run run --port "$PORT" --threads 1 > serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 60); do
  curl -sf "localhost:$PORT/ready" > /dev/null && break
  sleep 1
done
curl -sf "localhost:$PORT/v1/score" -H 'content-type: application/json' \
  -d '{"history": [3, 7], "context": {"likes_level": 1, "views_level": 1}, "candidates": [5, 6]}' \
  | tee score.json
grep -q '"scores"' score.json || { echo "serve answered no scores" >&2; cat serve.log >&2; exit 1; }
echo
echo "torch floor $FLOOR check passed"
