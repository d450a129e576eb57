"""Stage (b) for torch_reference: pytorch-vdsr's training step at its best on the same device.

Same model (torch_reference.Net: 20 convs of 64 features, no biases), batch and patch size as vdsr_jax's
step; summed squared error, global-norm clipping 0.4, momentum SGD with weight decay (fused on CUDA). The
step never waits for the device (no float(loss)); inputs are fixed random tensors already on the device, so
torch does no patch sampling (vdsr_jax's step does). Settings:

  fp32                TF32 off (cuDNN and matmul), NCHW
  tf32                TF32 on (torch's own default for cuDNN convolutions)
  bf16_channels_last  channels_last, bf16 autocast
  bf16_compiled       the same under torch.compile (default mode), if it works here

Writes WORK/bench_torch.json after every measurement.
"""
import statistics
import time

from benchmarks.gpu.common import log, measure_in_budget, stage_args, step_flops, time_calls, write_json

COMPILE_GUESS_S = 60  # torch.compile's first compilation of this model, for the time budget
SETTINGS = {
    "fp32": {"tf32": False, "channels_last": False, "bf16": False, "compile": False},
    "tf32": {"tf32": True, "channels_last": False, "bf16": False, "compile": False},
    "bf16_channels_last": {"tf32": True, "channels_last": True, "bf16": True, "compile": False},
    "bf16_compiled": {"tf32": True, "channels_last": True, "bf16": True, "compile": True},
}


def torch_net(depth: int, features: int):
    """torch_reference.Net for the paper's size; the same architecture at another size (the CPU smoke run)."""
    from torch import nn

    from torch_reference import Net

    if (depth, features) == (20, 64):
        return Net()

    class SmallNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [1] + [features] * (depth - 1) + [1]
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False) for a, b in zip(widths, widths[1:]))

        def forward(self, x):
            h = x
            for i, conv in enumerate(self.convs):
                h = conv(h)
                if i < len(self.convs) - 1:
                    h = nn.functional.relu(h)
            return h + x

    return SmallNet()


def setting_model(s: dict, opts: dict):
    """(model on the device in the setting's memory format, device, memory format, synchronize) for a
    SETTINGS entry, with its TF32 switches set (cuDNN autotuning on)."""
    import torch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = opts["tf32"]
        torch.backends.cudnn.allow_tf32 = opts["tf32"]
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    fmt = torch.channels_last if opts["channels_last"] else torch.contiguous_format
    model = torch_net(s["depth"], s["features"]).to(device).to(memory_format=fmt)
    return model, device, fmt, torch.cuda.synchronize if cuda else (lambda: None)


def measure(s: dict, name: str, batch: int) -> dict:
    import torch

    opts = SETTINGS[name]
    model, device, fmt, sync = setting_model(s, opts)
    cuda = device.type == "cuda"
    params = list(model.parameters())
    extra = {"fused": True} if cuda else {"foreach": False}
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, **extra)
    net = torch.compile(model) if opts["compile"] else model
    shape = (batch, 1, s["patch"], s["patch"])
    inputs = torch.rand(shape, device=device).contiguous(memory_format=fmt)
    targets = torch.rand(shape, device=device).contiguous(memory_format=fmt)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts["bf16"]):
            out = net(inputs)
        loss = torch.sum(torch.square(out.float() - targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.4, foreach=cuda)
        optimizer.step()
        return loss

    start = time.perf_counter()
    step()
    sync()
    first_s = time.perf_counter() - start

    def run(count):
        for _ in range(count):
            step()
        sync()

    seconds, times = time_calls(run, s["rep_s"], s["reps"])
    flops = step_flops(batch, s["patch"], s["depth"], s["features"])
    return {"impl": "torch", "setting": name, "batch": batch, "ms": seconds * 1e3, "ms_min": min(times) * 1e3,
            "spread": (max(times) - min(times)) / seconds, "patches_per_s": batch / seconds,
            "tflops": flops / seconds / 1e12, "first_step_s": first_s}


def bf16_matmul_tflops(n: int, reps: int) -> dict | None:
    import torch

    if not torch.cuda.is_available():
        return None
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    c, d = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))

    def run(count):
        for i in range(count):
            (a @ b) if i % 2 else (c @ d)
        torch.cuda.synchronize()

    seconds, _ = time_calls(run, 0.3, reps)
    return {"n": n, "ms": seconds * 1e3, "tflops": 2 * n**3 / seconds / 1e12}


def main(argv=None) -> int:
    args = stage_args(argv)
    s = args.settings
    out_path = args.work / "bench_torch.json"
    import torch

    result = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "threads": torch.get_num_threads(), "steps": [], "skipped": []}
    log("torch", f"torch {result['torch']} on {result['device']}")
    result["matmul"] = bf16_matmul_tflops(s["matmul_n"], s["reps"])
    if result["matmul"]:
        log("torch", f"bf16 matmul {s['matmul_n']}³: {result['matmul']['tflops']:.1f} TFLOP/s")
    write_json(out_path, result)
    measured = {}
    for name in s["torch_settings"]:
        for batch in s["batches"]:
            # torch.compile's first step compiles; its cost is predicted from its own previous batch
            previous = measured.get(name) or (COMPILE_GUESS_S if SETTINGS[name]["compile"] and not s["tiny"]
                                              else statistics.median([*measured.values()] or [0]))
            seconds = measure_in_budget(
                "torch", result, name, batch, previous, args.until, lambda: measure(s, name, batch),
                lambda row: f"{name:18s} batch {batch:4d}: {row['ms']:8.2f} ms/step {row['patches_per_s']:9.0f} "
                            f"patches/s {row['tflops']:7.2f} TFLOP/s (first step {row['first_step_s']:.1f} s)",
                cleanup=torch.cuda.empty_cache if torch.cuda.is_available() else None)
            if seconds is not None:
                measured[name] = seconds
            write_json(out_path, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
