"""Stage (h): ×2 inference throughput on 1920×1080 Y frames (`infer_size`; small in the tiny run), in frames/s:
vdsr_jax's whole-frame jitted forward (float32 at matmul precision 'highest', bf16) and torch_reference's
(the `bench_torch.SETTINGS` of `torch_settings`: fp32, TF32, channels_last + bf16 autocast, torch.compile).
Weights are random at the run's size (speed does not depend on them); the input is
`benchmarks.inference.test_image`, already on the device. Writes WORK/bench_infer.json after every row.
"""
from benchmarks.gpu.common import log, measure_in_budget, precision_context, stage_args, time_calls, write_json


def jax_row(s: dict, precision: str, y) -> dict:
    import jax

    from vdsr_jax.model import create_model

    dtype, context = precision_context(precision)
    model = create_model({"depth": s["depth"], "features": s["features"], "use_bias": True, "compute_dtype": dtype})
    with context:
        x = jax.device_put(y[None, ..., None])
        params = jax.jit(model.init)(jax.random.key(0), x)["params"]
        apply = jax.jit(lambda p, v: model.apply({"params": p}, v)).lower(params, x).compile()

    def run(count):
        out = None
        for _ in range(count):
            out = apply(params, x)
        out.block_until_ready()

    seconds, _ = time_calls(run, s["rep_s"], s["reps"])
    return {"impl": "vdsr_jax", "setting": precision, "frames_per_s": 1 / seconds, "ms": seconds * 1e3}


def torch_row(s: dict, name: str, y) -> dict:
    import torch

    from benchmarks.gpu.bench_torch import SETTINGS, setting_model

    opts = SETTINGS[name]
    model, device, fmt, sync = setting_model(s, opts)
    net = torch.compile(model.eval()) if opts["compile"] else model.eval()
    x = torch.from_numpy(y)[None, None].to(device).contiguous(memory_format=fmt)

    def run(count):
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts["bf16"]):
            for _ in range(count):
                net(x)
        sync()

    seconds, _ = time_calls(run, s["rep_s"], s["reps"])
    return {"impl": "torch", "setting": name, "frames_per_s": 1 / seconds, "ms": seconds * 1e3}


def main(argv=None) -> int:
    from benchmarks.inference import test_image

    args = stage_args(argv)
    s = args.settings
    height, width = s["infer_size"]
    y = test_image(height, width)
    out_path = args.work / "bench_infer.json"
    result = {"frame": [height, width], "scale": 2, "steps": [], "skipped": []}
    describe = lambda row: f"{row['impl']} {row['setting']:18s} {height}×{width}: {row['frames_per_s']:.2f} frames/s"  # noqa: E731
    for precision in ("float32", "bf16"):
        measure_in_budget("infer", result, precision, 1, 0, args.until, lambda: jax_row(s, precision, y), describe)
        write_json(out_path, result)
    for name in s["torch_settings"]:
        measure_in_budget("infer", result, name, 1, 0, args.until, lambda: torch_row(s, name, y), describe)
        write_json(out_path, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
