"""Settings and helpers shared by the stages of the GPU run (`benchmarks/gpu_run.sh`).

Every setting has a default for the H200 run (`FULL`) and one for the CPU smoke run (`TINY`, chosen by
VDSR_GPU_RUN_TINY=1); any of them can be overridden by an environment variable VDSR_GPU_<NAME> (upper case;
lists comma-separated), e.g. VDSR_GPU_TRAIN_PRECISION=tf32 or VDSR_GPU_BUDGET_S=500.
"""
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

# vdsr_jax's dependencies that the device image lacks (KINDS.md's package list), by import name. The pack carries
# the first as cp312 wheels (benchmarks/pack_device_data.py) because the run imports them: ml_collections for
# vdsr_jax.configs, tensorboardX for the training's TensorBoard logs, imagecodecs for vdsr_jax.media (PNG).
# The run never imports the others (it reads the pack itself, without TFDS, and no video); tests/test_gpu_run.py
# runs it with them unimportable.
DEVICE_WHEELS = ("ml_collections", "tensorboardX", "imagecodecs")
DEVICE_ABSENT = ("tensorflow_datasets", "array_record", "importlib_resources", "av", "tensorflow")

FULL = {
    "tiny": False,
    "budget_s": 480,  # the whole run from the driver's start: with the wheels' install and grace_s, under 9 min
    "patch": 41,
    "depth": 20,
    "features": 64,
    # (a, b) benchmarks
    "matmul_n": 8192,
    "sampler_pool_mib": 1024,  # the on-device sampler alone, on a full pool of the div2k layout (issue 12)
    "batches": [64, 128, 256],
    "jax_precisions": ["bf16", "tf32", "float32"],
    "torch_settings": ["fp32", "tf32", "bf16_channels_last", "bf16_compiled"],
    "rep_s": 0.25,  # seconds per timed repetition (steps per repetition calibrated to it)
    "reps": 5,  # repetitions; the median is reported
    "jax_bench_s": 100,
    "torch_bench_s": 70,
    # (h) inference: ×2 of one Y frame of this size (height, width), frames/s
    "infer_size": [1080, 1920],
    "infer_s": 45,
    # (c) training by vdsr_jax.training with a time budget: the paper's recipe (x234, 9,960 steps) within
    # recipe_s, then x234_long (115,840 steps) scaled to the time left, at least long_min_s
    "train_precision": "bf16",  # the recipe's
    "long_precision": "tf32",  # x234_long's: float32 parameters and activations, TF32 convolutions
    "train_batch": 64,
    "train_steps": 0,  # > 0: the recipe's steps instead of 9,960
    "recipe_s": 120,
    "long_min_s": 60,
    "long_max_s": 3600,  # x234_long's stage at most this long (the tiny run's cap; the budget decides here)
    "long_steps_per_epoch": 0,  # > 0: x234_long's epoch instead of one pass over the patches
    "log_every": 50,
    # (d) evaluation
    "eval_sets": ["Set5", "Set14"],
    "eval_scales": [2, 3, 4],
    "eval_images": 0,  # 0: all
    "eval_reserve_s": 90,
    "grace_s": 25,  # a stage is killed this long after its own deadline
}

TINY = {
    **FULL,
    "tiny": True,
    "budget_s": 300,
    "depth": 3,
    "features": 8,
    "matmul_n": 256,
    "sampler_pool_mib": 34,  # the smallest pool of the div2k layout
    "batches": [4],
    "jax_precisions": ["bf16", "float32"],  # tf32 differs from float32 only in the precision name
    "torch_settings": ["fp32", "bf16_channels_last"],
    "rep_s": 0.02,
    "reps": 2,
    "jax_bench_s": 120,
    "torch_bench_s": 60,
    "infer_size": [36, 64],
    "infer_s": 60,
    "train_precision": "float32",
    "long_precision": "float32",
    "train_batch": 4,
    "train_steps": 30,
    "recipe_s": 60,
    "long_min_s": 25,
    "long_max_s": 25,
    "long_steps_per_epoch": 1250,  # 100 000 steps, so the tiny run's budget has to scale them
    "log_every": 5,
    "eval_sets": ["Set5"],
    "eval_scales": [2],
    "eval_images": 1,
    "eval_reserve_s": 60,
    "grace_s": 60,
}

# Published figures (PSNR, dB) for the results table.
PAPER = {"Set5": {2: 37.53, 3: 33.66, 4: 31.35}, "Set14": {2: 33.03, 3: 29.77, 4: 28.01}}
PYTORCH_VDSR = {"Set5": {2: 37.65, 3: 33.77, 4: 31.45}, "Set14": {2: 33.06, 3: 29.85, 4: 28.09}}
GOALS = {"step_share_of_ceiling": 0.40, "ratio_vs_torch_best": 1.0, "recipe_wall_s": 600, "sampler_over_step": 3.0}

PRECISIONS = {  # name -> (compute dtype, jax.default_matmul_precision or None)
    "float32": ("float32", "highest"),  # true fp32 (on GPUs XLA's default for f32 convs may use TF32)
    "tf32": ("float32", "tensorfloat32"),
    "bf16": ("bfloat16", None),  # bf16 convolutions, float32 parameters and residual
}


def settings() -> dict:
    """FULL or TINY (VDSR_GPU_RUN_TINY=1), with VDSR_GPU_<NAME> overrides."""
    base = dict(TINY if os.environ.get("VDSR_GPU_RUN_TINY", "") not in ("", "0") else FULL)
    for name, default in list(base.items()):
        text = os.environ.get(f"VDSR_GPU_{name.upper()}")
        if text is None or name == "tiny":
            continue
        if isinstance(default, list):
            kind = type(default[0]) if default else str
            base[name] = [kind(part) for part in text.split(",") if part]
        elif isinstance(default, bool):
            base[name] = text not in ("0", "", "false")
        else:
            base[name] = type(default)(text)
    return base


def precision_context(name: str):
    """(compute dtype name, context manager to trace and compile under) for a precision name."""
    import jax

    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {name!r}")
    dtype, matmul = PRECISIONS[name]
    return dtype, (jax.default_matmul_precision(matmul) if matmul else contextlib.nullcontext())


def step_flops(batch: int, patch: int, depth: int, features: int) -> float:
    """One training step: forward 2·H·W·9·Cin·Cout per conv, backward twice that (same as
    benchmarks/train_step.py); 6.7 GFLOP per 41×41 patch for the 20×64 network."""
    channels = [1] + [features] * (depth - 1) + [1]
    forward = sum(2 * patch * patch * 9 * cin * cout for cin, cout in zip(channels, channels[1:]))
    return 3.0 * forward * batch


def time_calls(run, rep_s: float, reps: int) -> tuple[float, list[float]]:
    """Median seconds per call of `run(n)` (which runs n calls and waits for them): n calibrated so that a
    repetition lasts about `rep_s`; one warm-up repetition first."""
    run(2)
    start = time.perf_counter()
    run(1)
    one = max(time.perf_counter() - start, 1e-6)
    n = int(min(max(rep_s / one, 2), 2000))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run(n)
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times), times


def log(stage: str, message: str) -> None:
    elapsed = time.time() - float(os.environ.get("VDSR_GPU_T0", time.time()))
    print(f"[{elapsed:6.1f}s {stage}] {message}", flush=True)


def measure_in_budget(stage: str, result: dict, setting: str, batch: int, need_s: float, until: float, measure,
                      describe, cleanup=None) -> float | None:
    """Run `measure()` (-> a row for `result["steps"]`) unless `need_s` more seconds would pass `until`;
    record a skip or failure in `result["skipped"]` instead. Returns the seconds it took, None if no row."""
    if time.time() + need_s > until:
        result["skipped"].append({"setting": setting, "batch": batch, "why": "time budget"})
        log(stage, f"skipped {setting} batch {batch}: time budget")
        return None
    start = time.time()
    try:
        row = measure()
    except Exception as e:  # noqa: BLE001 - record and go on with the other settings
        result["skipped"].append({"setting": setting, "batch": batch, "why": f"{type(e).__name__}: {e}"[:500]})
        log(stage, f"{setting} batch {batch} failed: {type(e).__name__}: {str(e)[:200]}")
        return None
    finally:
        if cleanup is not None:
            cleanup()
    result["steps"].append(row)
    log(stage, describe(row))
    return time.time() - start


def write_json(path, data) -> None:
    """Atomic: a stage killed while writing leaves the previous version."""
    from vdsr_jax.media import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")


def read_json(path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def stage_args(argv=None):
    """Every stage: `python -m benchmarks.gpu.<stage> WORK --until UNIX_TIME [--out OUT] [--pack PACK]`."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--until", type=float, default=float("inf"), help="soft deadline (time.time())")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--pack", type=Path)
    parser.add_argument("--config", default="x234", help="the training config (train_run, eval_run)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.settings = read_json(args.work / "settings.json") or settings()
    return args
