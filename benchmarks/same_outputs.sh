#!/usr/bin/env bash
# Do two commits give the same outputs? `avrsp predict` on the demo clip (maps.npz, every
# float) and `avrsp evaluate` on a small synthetic dataset (per_video.csv), both in fp32
# with the working tree's built-in model file, each commit's code on the same inputs.
#
#     bash benchmarks/same_outputs.sh BEFORE [AFTER]     # AFTER: the working tree
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
py=${PYTHON:-$repo/.venv/bin/python}
before=${1:?"usage: $0 BEFORE_COMMIT [AFTER_COMMIT]"}
after=${2:-}
work=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$work/before" >/dev/null 2>&1 || true;
      [ -n "$after" ] && git -C "$repo" worktree remove --force "$work/after" >/dev/null 2>&1; rm -rf "$work"' EXIT
git worktree add --detach "$work/before" "$before" >/dev/null
src_after=$repo/src
if [ -n "$after" ]; then git worktree add --detach "$work/after" "$after" >/dev/null; src_after=$work/after/src; fi
PYTHONPATH=$repo/src "$py" -m avrsp synth "$work/data" --videos 6 --frames 40 --seed 7100 >/dev/null
checkpoint=$repo/src/avrsp/assets/avrsp_tiny_synth.safetensors
for side in before after; do
    src=$work/before/src; [ $side = after ] && src=$src_after
    PYTHONPATH=$src "$py" -m avrsp predict "$repo/src/avrsp/assets/demo.mp4" --checkpoint "$checkpoint" \
        --out "$work/$side/predict" --npz --precision fp32 --quiet >/dev/null 2>&1
    PYTHONPATH=$src "$py" -m avrsp evaluate --checkpoint "$checkpoint" --data "$work/data/stavis" --dataset stavis \
        --split 1 --precision fp32 --out "$work/$side/eval" --quiet >/dev/null 2>&1
done
WORK=$work "$py" - <<'PY'
import csv, os, sys
import numpy as np
w = os.environ["WORK"]
a, b = (np.load(f"{w}/{s}/predict/demo/maps.npz") for s in ("before", "after"))
diff = max(float(np.abs(a[k] - b[k]).max()) for k in a.files) if a.files == b.files else float("inf")
ra, rb = (list(csv.DictReader(open(f"{w}/{s}/eval/per_video.csv"))) for s in ("before", "after"))
print(f"predict: {len(a.files)} maps, largest difference {diff}; evaluate: {len(ra)} videos, "
      f"per-video scores {'identical' if ra == rb else 'DIFFERENT'}")
sys.exit(0 if diff == 0 and ra == rb else 1)
PY
