#!/usr/bin/env bash
# The CUDA paths end to end, on a machine with a GPU: the embedded default trained on the GPU, a torchrun
# (NCCL) run, evaluation, key frames and archive scoring with the checkpoint, tracking, and the model
# benchmark's CUDA columns. Prints one line per step (exit status, wall seconds) and the end of its log;
# every log stays in OUT_DIR. Optionally (LONG_SEEDS="0 1 2"), the long-video set trained on the GPU with
# data.flip auto and false side by side (fixed epochs, fp32), one process per seed and setting; CHECKS=0 runs
# only that.
#
# Usage: bash scripts/cuda_check.sh OUT_DIR     (vidattn importable by python3; ffmpeg not needed)
set -uo pipefail
OUT=${1:?usage: cuda_check.sh OUT_DIR}
mkdir -p "$OUT"
W=$(mktemp -d)
PY=${PY:-python3}
V="$PY -m vidattn"
export PYTHONUNBUFFERED=1

step() {
  local name=$1 limit=$2
  shift 2
  local t0=$EPOCHREALTIME
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  printf '== %-14s rc=%-3d %7.1f s\n' "$name" "$rc" "$(awk "BEGIN{print $EPOCHREALTIME - $t0}")"
  grep -v -E '^\s*$|it/s\]|s/it\]' "$OUT/$name.log" | tail -n "${TAIL:-4}"
}

last_metrics() {  # the last validation line of a run's metrics.jsonl
  $PY -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1]) if 'val_top1' in l]; \
print('epochs', len(rows), 'best val_top1', max(r['val_top1'] for r in rows), 'last', rows[-1]['val_top1'])" "$1/metrics.jsonl"
}

nvidia-smi -L
$PY -c "import torch, av, decord; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'av', av.__version__, 'decord', decord.__version__)"

if [ -n "${LONG_SEEDS:-}" ]; then  # in the background: the GPU and 16 cores have room beside the checks
  step synth_long 300 $V synth "$W/long" --frames 48-192 --event-frames 6
  for seed in $LONG_SEEDS; do
    for flip in auto false; do
      ( t0=$EPOCHREALTIME
        timeout "${LONG_LIMIT:-400}" $V train --data-root "$W/long" --out "$W/long_${flip}_$seed" --device cuda \
          -o train.seed="$seed" -o data.flip="$flip" -o train.amp=off -o train.epochs="${LONG_EPOCHS:-50}" \
          -o train.threads=2 -o train.progress=false >"$OUT/long_${flip}_$seed.log" 2>&1
        echo "rc=$? wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $t0}")" >>"$OUT/long_${flip}_$seed.log" ) &
    done
  done
fi

if [ "${CHECKS:-1}" = 1 ]; then
step default 300 $V train --out "$W/default" --device cuda -o train.progress=false
last_metrics "$W/default"
CK="$W/default/checkpoints/best.pt"
VAL="$W/default/data/val"
step ddp_nccl 240 torchrun --standalone --nproc_per_node=1 -m vidattn train --data-root "$W/default/data" \
  --out "$W/ddp" --epochs 2 --device cuda -o train.progress=false
step eval 120 $V eval "$CK" --device cuda --json
step eval_kf 180 $PY scripts/eval_keyframes.py "$CK" "$VAL" --device cuda
VIDEO=$(find "$VAL" -name '*.mp4' | sort | head -n 1)
step keyframes 120 $V keyframes "$VIDEO" --checkpoint "$CK" --device cuda -k 3 --json
step score 240 $V score "$VAL" --out "$W/scores.db" --checkpoint "$CK" --device cuda --keyframes 2 --workers 4 --quiet
step track 150 $PY scripts/eval_tracking.py --synthetic 4 --trackers vidattn --device cuda --scenarios --batch-timing
TAIL=12 step bench_models 150 $PY scripts/bench_models.py --models r2plus1d_18,r2plus1d_tiny --attn none,stc \
  --batch-sizes 1 --repeats 3
fi

if [ -n "${LONG_SEEDS:-}" ]; then
  wait
  for seed in $LONG_SEEDS; do
    for flip in auto false; do
      echo "long seed $seed flip $flip: $(last_metrics "$W/long_${flip}_$seed" 2>&1 | tail -n 1)"
      grep -E "wall_s|data.flip" "$OUT/long_${flip}_$seed.log"
    done
  done
fi
