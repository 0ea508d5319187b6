#!/usr/bin/env bash
# GPU check, for a machine with a CUDA GPU: build, CUDA tests (with the no-host-sync and CUDA-graph
# tests), compute-sanitizer (memcheck, racecheck, synccheck, initcheck), CUDA benchmarks, the
# engine on the GPU (training, tiled eval, NCCL when two GPUs, eval memory at 1024x2048), one
# report.
#
#   bash scripts/gpu_check.sh [REPORT_DIR]       (default: $OUT if set, else ./gpu_report)
#
# Builds in place against the torch already installed (no network on the GPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."
REPORT=${1:-${OUT:-gpu_report}}
mkdir -p "$REPORT"
LOG="$REPORT/gpu_check.md"
status=0
step() {  # step NAME COMMAND...: runs it, logs its tail, remembers a failure
  local name=$1; shift
  echo "== $name: $*" | tee -a "$LOG"
  local t0=$SECONDS
  "$@" > "$REPORT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$REPORT/$name.log" >> "$LOG"
  echo "-- $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$LOG"
  [ $rc -eq 0 ] || status=1
}

{
  echo "# gscnn_ops GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nvcc --version | tail -n 1
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$LOG" 2>&1

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} FORCE_CUDA=1
step build pip install --no-build-isolation --no-deps -e .
step tests_cuda python -m pytest -q -p no:cacheprovider tests/test_gated_conv2d_cuda.py tests/test_no_host_sync.py \
  tests/test_label_errors.py tests/test_cuda_build.py tests/test_edge_targets.py
step tests_all python -m pytest -q -p no:cacheprovider -x tests --ignore=tests/test_cmake_build.py
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
step memcheck "$SAN" --tool memcheck --error-exitcode 1 python scripts/cuda_smoke.py
step racecheck "$SAN" --tool racecheck --error-exitcode 1 python scripts/cuda_smoke.py
step synccheck "$SAN" --tool synccheck --error-exitcode 1 python scripts/cuda_smoke.py
step initcheck "$SAN" --tool initcheck --error-exitcode 1 python scripts/cuda_smoke.py
step benchmarks python -m pytest benchmarks -q -p no:cacheprovider --benchmark-only -k cuda \
  --benchmark-json="$REPORT/bench_cuda.json"
if [ -f "$REPORT/bench_cuda.json" ]; then
  python benchmarks/summarize.py "$REPORT/bench_cuda.json" > "$REPORT/bench_cuda.md" 2>&1
  cat "$REPORT/bench_cuda.md" >> "$LOG"
  # The static report's estimates with the measured medians beside them (its last table).
  step kernel_report python scripts/kernel_report.py --measured "$REPORT/bench_cuda.json"
fi
# The engine on the GPU: a short bf16 training run with evaluation, tiled eval with the
# distance-based crops, two-process NCCL training when there are two GPUs, eval memory.
step train_cuda python -m gscnn_ops train --device cuda --backbone resnet18 --steps 20 \
  --batch-size 4 --amp bf16 --synthetic-size 256 512 --synthetic-length 32 --eval-every 20 \
  --out "$REPORT/train_cuda" --no-progress
step eval_cuda python -m gscnn_ops eval --checkpoint "$REPORT/train_cuda/model.pt" --device cuda \
  --amp bf16 --tile 96 192 --crop-factors 0 32 64 --json "$REPORT/eval_cuda.json" --no-progress
if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
  step ddp_cuda torchrun --nproc_per_node 2 -m gscnn_ops train --device cuda --backbone resnet18 \
    --steps 10 --batch-size 2 --synthetic-size 256 512 --out "$REPORT/ddp_cuda" --no-progress
fi
step eval_memory python scripts/eval_memory.py --device cuda
step eval_memory_bf16 python scripts/eval_memory.py --device cuda --amp bf16
echo "overall: $([ $status -eq 0 ] && echo PASS || echo FAIL)" | tee -a "$LOG"
exit $status
