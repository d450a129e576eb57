"""Stages (a) and (b) for vdsr_jax: environment, measured bf16 matmul rate, train-step throughput.

The step is the one `vdsr_jax.train` runs (on-device patch sampling + the shard_map step,
`make_sampling_train_step`), with pytorch-vdsr's model and optimiser (vdsr_jax.configs.pytorch_vdsr: no biases,
summed loss, global-norm clipping, momentum SGD) so that it is the same work as torch_reference's step.
Precisions: float32 (matmul precision 'highest'), tf32 ('tensorfloat32'), bf16 (bf16 convolutions, float32
parameters). Writes WORK/bench_jax.json after every measurement.
"""
import importlib.metadata
import platform
import statistics
import subprocess
import time

import numpy as np

from benchmarks.gpu.common import log, measure_in_budget, precision_context, stage_args, step_flops, time_calls, write_json


def env_info() -> dict:
    import jax
    import jaxlib

    device = jax.devices()[0]
    info = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "backend": jax.default_backend(), "device_kind": device.device_kind, "device_count": jax.device_count(),
            "devices": [str(d) for d in jax.devices()]}
    for name in ("jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt", "flax", "optax",
                 "numpy", "nvidia-cudnn-cu13", "nvidia-cublas"):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        from jax._src.lib import cuda_versions

        if cuda_versions is not None:
            for fn in ("cuda_runtime_get_version", "cuda_driver_get_version", "cudnn_get_version",
                       "cublas_get_version", "cuda_compute_capability"):
                try:
                    info[f"cuda.{fn.removesuffix('_get_version')}"] = getattr(cuda_versions, fn)(
                        *([0] if fn == "cuda_compute_capability" else []))
                except Exception:  # noqa: BLE001 - names vary across jaxlib versions
                    pass
    except ImportError:
        pass
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def bf16_matmul_tflops(n: int, reps: int) -> dict:
    """n×n×n bf16 matrix product on random data (two input sets, alternated), median TFLOP/s."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0), 4)
    pairs = [(jax.random.normal(keys[2 * i], (n, n), jnp.bfloat16), jax.random.normal(keys[2 * i + 1], (n, n), jnp.bfloat16))
             for i in range(2)]
    matmul = jax.jit(lambda a, b: a @ b)

    def run(count):
        out = None
        for i in range(count):
            out = matmul(*pairs[i % 2])
        out.block_until_ready()

    seconds, _ = time_calls(run, 0.3, reps)
    return {"n": n, "ms": seconds * 1e3, "tflops": 2 * n**3 / seconds / 1e12}


def random_source(patch: int):
    """Training pairs of two random images: the step's sampling cost does not depend on the content."""
    from vdsr_jax.data.patches import prepare_pairs

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (160, 200, 3), dtype=np.uint8) for _ in range(2)]
    return prepare_pairs(images, (2, 3, 4), (1.0,), patch)


def measure_step(s: dict, precision: str, batch: int, host_source) -> dict:
    import jax

    from vdsr_jax.configs import pytorch_vdsr
    from vdsr_jax.model import create_model
    from vdsr_jax.optim import make_optimizer
    from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, replicated

    config = pytorch_vdsr.get_config()
    dtype, context = precision_context(precision)
    mesh = data_mesh()
    model = create_model({"depth": s["depth"], "features": s["features"], "use_bias": False, "compute_dtype": dtype})
    with context:
        source = jax.device_put(host_source, replicated(mesh))
        optimizer = make_optimizer(config, 1000)
        # jitted: an eager init compiles every op on its own
        state = jax.jit(lambda k: create_train_state(model, optimizer, k))(jax.random.key(0))
        state = jax.device_put(state, replicated(mesh))
        key = jax.random.key(1)
        step = make_sampling_train_step(mesh, batch, s["patch"], True, config.loss_scale)
        start = time.perf_counter()
        compiled = step.lower(state, source, key).compile()
        compile_s = time.perf_counter() - start
    holder = {"state": state}

    def run(count):
        loss = None
        for _ in range(count):
            holder["state"], loss = compiled(holder["state"], source, key)
        loss.block_until_ready()

    seconds, times = time_calls(run, s["rep_s"], s["reps"])
    flops = step_flops(batch, s["patch"], s["depth"], s["features"])
    return {"impl": "vdsr_jax", "setting": precision, "batch": batch, "ms": seconds * 1e3,
            "ms_min": min(times) * 1e3, "spread": (max(times) - min(times)) / seconds,
            "patches_per_s": batch / seconds, "tflops": flops / seconds / 1e12, "compile_s": compile_s}


def measure_sampler(pool_mib: float) -> dict:
    """Patches/s of the on-device sampler alone (`benchmarks.data`), on a full pool of the div2k layout."""
    import jax

    from benchmarks.data import pool_stand_in, sampler_rate

    return {"pool_mib": pool_mib, "patches_per_s": sampler_rate(jax.device_put(pool_stand_in(pool_mib)))}


def main(argv=None) -> int:
    args = stage_args(argv)
    s = args.settings
    out_path = args.work / "bench_jax.json"
    result = {"env": env_info(), "steps": [], "skipped": []}
    log("jax", f"{result['env']['device_kind']} × {result['env']['device_count']}, jax {result['env']['jax']}")
    write_json(out_path, result)
    result["matmul"] = bf16_matmul_tflops(s["matmul_n"], s["reps"])
    log("jax", f"bf16 matmul {s['matmul_n']}³: {result['matmul']['tflops']:.1f} TFLOP/s")
    write_json(out_path, result)
    result["sampler"] = measure_sampler(s["sampler_pool_mib"])
    log("jax", f"on-device sampler alone (batch 64 of 41², pool of {s['sampler_pool_mib']} MiB): "
               f"{result['sampler']['patches_per_s']:.0f} patches/s")
    write_json(out_path, result)
    host_source = random_source(s["patch"])
    measured = []
    for batch in s["batches"]:
        for precision in s["jax_precisions"]:
            # the last measurement's cost (compile + timing) predicts the next one's
            seconds = measure_in_budget(
                "jax", result, precision, batch, statistics.median(measured) if measured else 0, args.until,
                lambda: measure_step(s, precision, batch, host_source),
                lambda row: f"{precision:8s} batch {batch:4d}: {row['ms']:8.2f} ms/step "
                            f"{row['patches_per_s']:9.0f} patches/s {row['tflops']:7.2f} TFLOP/s "
                            f"(compile {row['compile_s']:.1f} s)")
            if seconds is not None:
                measured.append(seconds)
            write_json(out_path, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
