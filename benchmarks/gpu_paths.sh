#!/usr/bin/env bash
# The device-generic GPU paths in one call (docs/benchmarks.md, "GPU paths"): run from the
# repository root on a machine with one GPU; results go to $OUT (default /tmp/gpu_paths).
#
#   1. `ditscale train tiny` (pixel space, shapes) in bf16 autocast with torch.compile, sample grids
#      at validation and TensorBoard, against the same run in fp32 eager: both losses, throughput;
#      then `ditscale sample` from the bf16 run on the GPU.
#   2. DiT-XL/2 in the real training loop, bf16, batch 128, eager and compiled (gpu_train.py).
#   3. DiT-S/2 under torchrun with an NCCL process group (DDP on one rank).
#
#   bash benchmarks/gpu_paths.sh                      # on the GPU machine
#   STEPS=20 DEVICE=cpu DRY=1 bash benchmarks/gpu_paths.sh   # a CPU check of the commands (seconds)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/gpu_paths}
STEPS=${STEPS:-3000}
DEVICE=${DEVICE:-cuda}
DRY=${DRY:-0}
PY=${PY:-python3}
RUNS=$(mktemp -d)
mkdir -p "$OUT"

$PY -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version(),
      'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv,noheader

echo "== 1. tiny: bf16 + compile + sample grids + TensorBoard, then fp32 eager"
every=$(( STEPS / 3 ))
common=(device="$DEVICE" max_steps="$STEPS" val.every="$every" ckpt_every=0 log_every=100)
timeout 240 $PY -m ditscale train tiny --out "$RUNS/bf16" "${common[@]}" precision=bf16 cpu_bf16=true compile=true \
    val.sample_images=16 tensorboard=true | tail -2
timeout 240 $PY -m ditscale train tiny --out "$RUNS/fp32" "${common[@]}" precision=fp32 | tail -2
cp "$RUNS/bf16/result.json" "$OUT/tiny_bf16_result.json"; cp "$RUNS/fp32/result.json" "$OUT/tiny_fp32_result.json"
$PY - "$RUNS" <<'EOF'
import json, statistics, sys
from pathlib import Path
val = {}
for run in ("bf16", "fp32"):
    rows = [json.loads(line) for line in open(Path(sys.argv[1]) / run / "metrics.jsonl")]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r]
    rates = rates[1:] or rates  # the first interval holds compilation
    val[run] = json.loads((Path(sys.argv[1]) / run / "result.json").read_text())["val_loss"]
    print(f"tiny {run}: images/s median {statistics.median(rates):.0f} over {len(rates)} intervals, val_loss {val[run]:.4f}")
print(f"tiny: bf16 val_loss / fp32 val_loss - 1 = {val['bf16'] / val['fp32'] - 1:+.2%}")
EOF
ls "$RUNS/bf16/samples" "$RUNS/bf16/tb"
last=$(ls "$RUNS/bf16/samples" | tail -1) && cp "$RUNS/bf16/samples/$last" "$OUT/tiny_bf16_grid_$last"
timeout 120 $PY -m ditscale sample "$RUNS/bf16" --out "$OUT/tiny_bf16_sample.png" --device "$DEVICE" --quiet

echo "== 2. DiT-XL/2, bf16, batch 128, eager and compiled"
dry=(); [ "$DRY" = 1 ] && dry=(--dry-run)
timeout 300 $PY benchmarks/gpu_train.py --models DiT-XL/2 --batch-size 128 --steps 40 --compile both \
    --val-images 0 --json "$OUT/xl2.json" "${dry[@]}" 2>&1 | grep -v "it/s\]" | tail -8

echo "== 3. DiT-S/2 under torchrun, NCCL process group"
if [ "$DRY" = 1 ]; then
    echo "(skipped on CPU)"
else
    timeout 120 $PY -m torch.distributed.run --standalone --nproc_per_node=1 benchmarks/gpu_train.py \
        --models DiT-S/2 --steps 20 --compile off --pg-backend nccl --json "$OUT/ddp_nccl.json" 2>&1 | tail -4
fi
rm -rf "$RUNS"
