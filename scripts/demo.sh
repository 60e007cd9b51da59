#!/usr/bin/env bash
# The main job: synthetic demo data -> train the CPU preset -> evaluate -> submission.
# Each run gets its own directory under runs/, so no earlier result is overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
MMCTR=.venv/bin/mmctr
DATA=data/demo
RUN=runs/demo-$(date +%Y%m%d-%H%M%S)
start=$(date +%s)

"$MMCTR" synth "$DATA" --preset demo --seed 0 --force
"$MMCTR" train --data "$DATA" --config configs/cpu.toml --out "$RUN"
"$MMCTR" evaluate --run "$RUN" --data "$DATA" --split valid --json > "$RUN/valid.json"
"$MMCTR" predict --run "$RUN" --data "$DATA" --split test --out "$RUN/submission.zip"

elapsed=$(( $(date +%s) - start ))
.venv/bin/python - "$RUN" "$DATA" "$elapsed" <<'PY'
import json, sys
run, data, elapsed = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = json.load(open(f"{run}/valid.json"))
s = json.load(open(f"{run}/summary.json"))
print()
print("demo summary")
print(f"  valid AUC {m['auc']:.4f}   logloss {m['logloss']:.4f}   gAUC {m['gauc']:.4f}")
print(f"  best epoch {s['best_epoch']} of {s['epochs_run']}; training {s['train_seconds']:.0f}s; "
      f"whole demo {elapsed}s (after setup)")
print(f"  data        {data}/")
print(f"  run         {run}/  (model.pt, metrics.jsonl, summary.json)")
print(f"  submission  {run}/submission.zip")
PY
