#!/usr/bin/env bash
# Every GPU check of cpcl in one call, under 8 minutes on one H100/H200, from the repository root:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: $OUT, else runs/gpu-check
#
# 1. the demo on CUDA; 2. a one-rank torchrun CPCL epoch whose every collective runs through the real
# process group (CPCL_FORCE_DISTRIBUTED=1: NCCL refuses two ranks on one GPU) and is checked against its
# backends; 3. bf16 and 4. fp16 CPCL runs; 5. the ViT-B/16 training-step benchmark (each precision, 1 and
# 4 micro-batches, and a batch of 16 alone: the floor of 4 micro-batches); 6. the CUHK-size epoch
# benchmark; 7. the real path rehearsed (benchmarks/real_path.py: an OpenAI-format ViT-B-16 archive and a
# CUHK-PEDES folder, the shipped CUHK-PEDES config under torchrun world size 1 on NCCL in bf16, then eval,
# index build, search, ONNX export and resume, each checked against the trained network; it prints the
# training throughput). Logs go to OUT_DIR/<step>.log, the benchmark tables to benchmarks/results/ and OUT_DIR.
#
# Python packages the machine may lack (open_clip_torch, faiss-cpu, ftfy, wcwidth) are installed from .whl/
# when that folder exists. Fetch them beforehand where pip reaches PyPI, for the machine's Python (3.12 on
# the lent H200), e.g.:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl open_clip_torch==3.3.0 faiss-cpu==1.15.1 ftfy==6.3.1 wcwidth==0.9.4
set -uo pipefail
OUT_DIR=${1:-${OUT:-runs/gpu-check}}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
START=$(date +%s)
failed=0
step() {  # step NAME SECONDS COMMAND...: run with a limit, keep the log, show its end
  local name=$1 limit=$2
  shift 2
  echo "== $name (at $(( $(date +%s) - START )) s)"
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $(( $(date +%s) - t0 )) s"
  tail -n 14 "$OUT_DIR/$name.log"
  [ $rc = 0 ] || failed=1
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
TRAIN="python3 -m cpcl train --config synthpedes_cpcl --device cuda --no-progress --overwrite"

step demo 150 python3 -m cpcl demo --device cuda --out "$OUT_DIR/demo" --no-progress --overwrite
step torchrun_one_rank 90 env CPCL_FORCE_DISTRIBUTED=1 CPCL_CHECK_COLLECTIVES=cuda \
  PYTHONPATH="$PWD/tests/support:$PYTHONPATH" \
  python3 -m torch.distributed.run --standalone --nproc_per_node=1 \
  -m cpcl train --config synthpedes_cpcl --device cuda --no-progress --overwrite --out "$OUT_DIR/torchrun" \
  --set train.epochs=1
step bf16 60 $TRAIN --out "$OUT_DIR/bf16" --set train.epochs=2 --set train.precision=bf16
step fp16 60 $TRAIN --out "$OUT_DIR/fp16" --set train.epochs=2 --set train.precision=fp16
step train_step 150 python3 benchmarks/train_step.py --device cuda --precisions bf16 fp16 fp32 --accumulate 1 4 \
  --steps 10 --warmup 3
step train_step_floor 45 python3 benchmarks/train_step.py --device cuda --precisions bf16 --batch 16 \
  --accumulate 1 --steps 10 --warmup 3
step epoch_scale 300 python3 benchmarks/epoch_scale.py --device cuda --precision bf16
step real_path 200 python3 benchmarks/real_path.py --device cuda --nproc 1 --precision bf16 --batch-size 16 \
  --work "$OUT_DIR/real_path"
cp benchmarks/results/train_step.md benchmarks/results/epoch_scale.md benchmarks/results/real_path_cuda.md \
  "$OUT_DIR"/ 2>/dev/null
echo "== done in $(( $(date +%s) - START )) s; $([ $failed = 0 ] && echo 'every step passed' || echo 'a step FAILED')"
exit $failed
