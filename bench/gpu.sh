#!/usr/bin/env bash
# The whole GPU measurement in one call (under 8 minutes on an H100): model-only fp16 throughput (ONNX Runtime CUDA
# EP with IO binding, and PyTorch eager fp16) at batch 1/8/32; 1080p25 cameras (NVDEC) with SlowFast-R50 4x16 at one
# inference per second, converting on the CPU (convert: cpu) and then with the graph on the GPU (convert: graph),
# K swept to saturation: p99 capture→publish, CPU cores, GPU utilisation (nvidia-smi), and the largest K within p99
# 500 ms for each (the lines "convert cpu: ..." and "convert graph: ..." at the end); what one frame's conversion
# costs each way; end-to-end efficiency at batch 32; how many cameras without decoding stay under p99 500 ms. JSON
# lines go to bench/results/<gpu-name>.jsonl and, when the device tool sets $OUT, to $OUT as well.
#
#   bench/gpu.sh            # on the GPU machine
#   bench/gpu.sh --smoke    # anywhere: the same steps on the CPU with tiny models (about a minute)
#
# A machine whose Python lacks onnxruntime-gpu (or av) can be given the wheels beforehand: this script installs an
# /tmp/w/onnxruntime_gpu-*.whl (or .whl/onnxruntime_gpu-*.whl) and .whl/small/*.whl into /tmp/site when the CUDA
# provider is not importable yet. Without av, the end-to-end steps use synthetic cameras (no decode).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=()
[ "${1:-}" = "--smoke" ] && smoke=(--smoke)
if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=${PYTHON:-python3}; fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ ${#smoke[@]} = 0 ] && ! "$py" -c "import torch, onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()" 2>/dev/null; then
  wheels=$(ls /tmp/w/onnxruntime_gpu-*.whl .whl/onnxruntime_gpu-*.whl 2>/dev/null | head -1 || true)
  if [ -n "$wheels" ]; then
    echo "installing $wheels (and .whl/small) into /tmp/site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$wheels" \
      $(ls .whl/small/*.whl 2>/dev/null) || echo "warning: wheel install failed; measuring what runs" >&2
  else
    echo "warning: no CUDA provider and no onnxruntime-gpu wheel (put one in /tmp/w or .whl/ first)" >&2
  fi
fi

out_args=()
if [ -n "${OUT:-}" ] && [ ${#smoke[@]} = 0 ]; then
  name=$("$py" -c "from bench.common import device_name, slug; print(slug(device_name()))")
  out_args=(--out "bench/results/$name.jsonl")
fi
status=0
# shellcheck disable=SC2086  # BENCH_ARGS: extra arguments for python -m bench (tests: --only STEP --out FILE)
BENCH_BUDGET_S=${BENCH_BUDGET_S:-400} timeout "${BENCH_TIMEOUT_S:-460}" \
  "$py" -m bench --gpu "${smoke[@]}" "${out_args[@]}" ${BENCH_ARGS:-} || status=$?
if [ -n "${OUT:-}" ]; then
  cp bench/results/*.jsonl bench/results/*.png "$OUT"/ 2>/dev/null || true
  [ ${#smoke[@]} = 0 ] || cp .cache/bench/*-smoke* "$OUT"/ 2>/dev/null || true
fi
exit $status
