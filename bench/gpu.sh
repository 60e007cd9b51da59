#!/usr/bin/env bash
# One full training epoch of the paper configuration on one NVIDIA GPU and on all of them
# (data-parallel, `mmctr train --nproc N`), in fp32 and in bf16.
#
#   bash bench/gpu.sh                 # microlens-1m synthetic set (3.6M train rows)
#   PRESET=tiny CONFIG=configs/cpu.toml bash bench/gpu.sh   # a seconds-long smoke run, CPU too
#
# It generates the data set if missing, then trains ONE epoch at the paper's batch size (128)
# and at a larger one (both global: split among the processes), in each precision of
# $PRECISIONS (default "fp32 bf16") and with each process count of $NPROCS (default "1 all":
# one GPU, then every GPU the machine has when that is more than one), printing samples/s,
# the epoch's seconds and rank 0's peak GPU memory of each.
# Python packages: uses $PY, else the project's .venv if there is one, else `python3`, with src/ on
# PYTHONPATH (numpy, pyarrow, tqdm and a CUDA build of torch must be importable); nothing is
# downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-microlens-1m}
BATCHES=${BATCHES:-"128 4096"}
PRECISIONS=${PRECISIONS:-"fp32 bf16"}
NPROCS=${NPROCS:-"1 all"}
DATA=${DATA:-data/$PRESET}
OUT=${OUT:-runs/gpu-bench}
CONFIG=${CONFIG:-configs/paper.toml}
PY=${PY:-python3}
[ "$PY" = python3 ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PY" - <<'PY'
import torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)"
print(f"torch {torch.__version__}; GPU: {gpu}")
PY
if [ ! -f "$DATA/train.parquet" ]; then
  "$PY" -m mmctr synth "$DATA" --preset "$PRESET" --seed 0
fi
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
counts=""
for n in $NPROCS; do
  [ "$n" = all ] && n=$GPUS
  [ "$n" -ge 1 ] 2>/dev/null || continue
  case " $counts " in *" $n "*) ;; *) counts="$counts $n" ;; esac
done
mkdir -p "$OUT"
for nproc in $counts; do
for precision in $PRECISIONS; do
for bs in $BATCHES; do
  run="$OUT/$(basename "$CONFIG" .toml)-$precision-bs$bs-np$nproc-$(date +%Y%m%d-%H%M%S)"
  # the paper's learning rate at every batch size: this measures speed, not a tuned recipe
  "$PY" -m mmctr train --data "$DATA" --config "$CONFIG" --out "$run" --no-progress \
    --nproc "$nproc" --set train.epochs=1 --set train.batch_size="$bs" \
    --set train.precision="$precision" --set train.eval_batch_size=4096
  "$PY" - "$run" "$bs" "$precision" "$nproc" <<'PY'
import json, sys
run, bs, precision, nproc = sys.argv[1:5]
rec = json.loads(open(f"{run}/metrics.jsonl").read().splitlines()[0])
mem = rec.get("gpu_peak_memory_gb")
mem_text = f"{mem} GB" if mem is not None else "n/a (ran on the CPU)"
print(f"RESULT {precision} batch {bs} x{nproc}: {rec['train_samples_per_s']:.0f} samples/s, "
      f"epoch {rec['train_seconds']:.1f}s, GPU peak memory {mem_text}, "
      f"valid AUC {rec['valid_auc']:.4f}")
PY
done
done
done
