#!/usr/bin/env bash
# The GPU run in one device call: (a) environment and measured bf16 matmul ceiling, (b) train-step throughput of
# vdsr_jax (float32, TF32, bf16) and torch_reference (fp32, TF32, channels_last + bf16 autocast, torch.compile) at
# batch 64/128/256, (h) ×2 inference frames/s on 1920×1080 Y, (c) vdsr_jax.configs.x234 (the paper's recipe) and
# then x234_long trained by vdsr_jax.training with time budgets, (d) Set5/Set14 ×2/×3/×4 of both, (e) results.json,
# train_log_<config>.jsonl, weights.npz, weights_x234_long.npz and run.log under $OUT, (f) the training loop's
# patches/s, (g) the on-device sampler alone against the fastest step (it should sustain 3× the step rate).
#
# Before it, here:  python -m benchmarks.pack_device_data --out .device_pack   (training Y, Set5/Set14, wheels)
# The device call:  run(command="bash benchmarks/gpu_run.sh", carry=[".device_pack"], timeout_s=600)
# CPU smoke run:    VDSR_GPU_RUN_TINY=1 OUT=$(mktemp -d) bash benchmarks/gpu_run.sh   (tests/test_gpu_run.py)
#
# Environment: OUT (required), VDSR_PACK (default .device_pack), PYTHON (default python3), VDSR_GPU_RUN_TINY=1,
# VDSR_GPU_<SETTING> overrides (benchmarks/gpu/common.py), e.g. VDSR_GPU_TRAIN_PRECISION=tf32.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
: "${OUT:?set OUT to the folder for the results}"
PACK="${VDSR_PACK:-.device_pack}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 VDSR_GPU_T0="${VDSR_GPU_T0:-$(date +%s.%N)}"
if compgen -G "$PACK/wheels/*.whl" >/dev/null && ! "$PY" -c "import importlib, benchmarks.gpu.common as c
for name in c.DEVICE_WHEELS: importlib.import_module(name)" 2>/dev/null; then
  # the vdsr_jax dependencies the device image lacks (benchmarks.gpu.common.DEVICE_WHEELS)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vdsr_site \
    "$PACK"/wheels/*.whl || exit 1
  export PYTHONPATH="/tmp/vdsr_site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -m benchmarks.gpu.run --out "$OUT" --pack "$PACK" 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
