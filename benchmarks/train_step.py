"""Train-step throughput of vdsr_jax and torch_reference on this machine, in one run.

    python -m benchmarks.train_step [--batch 16 64] [--patch 41] [--reps 5] [--torch-python PATH]

For each batch size: median ms per step over `reps` repetitions, steps/s, patches/s, achieved GFLOP/s and its
share of the CPU's peak, for vdsr_jax's training step (on-device patch sampling + the shard_map step over
all devices, as `vdsr_jax.train` runs it) and pytorch-vdsr's step (`torch_reference.train_step`) with the
same model, batch and patch size and all cores. `ratio` = torch ms / vdsr_jax ms (> 1: vdsr_jax faster).

`--torch-python PATH` times torch in that interpreter (a child process, batch by batch between the JAX
timings, so both share the machine's load) — for a Python whose jax is the newest but where torch would be
a CUDA download, e.g. `--torch-python python3.11` beside a Python 3.12 venv. The versions are printed.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEPTH, FEATURES = 20, 64


def step_flops(batch: int, patch: int) -> float:
    """Forward 2·H·W·9·Cin·Cout per conv; backward twice that (input and weight gradients)."""
    channels = [1] + [FEATURES] * (DEPTH - 1) + [1]
    forward = sum(2 * patch * patch * 9 * cin * cout for cin, cout in zip(channels, channels[1:]))
    return 3.0 * forward * batch


def peak_gflops() -> tuple[float, str]:
    """cores × clock × fp32 FLOP per cycle (FMA width from the CPU flags); a nominal figure."""
    flags = open("/proc/cpuinfo").read()
    mhz = max(float(line.split(":")[1]) for line in flags.splitlines() if line.startswith("cpu MHz"))
    per_cycle = 64 if "avx512f" in flags else 32 if " fma" in flags else 8
    cores = os.cpu_count()
    return cores * mhz / 1000 * per_cycle, f"{cores} cores × {mhz / 1000:.2f} GHz × {per_cycle} FLOP/cycle"


def time_steps(run_step, steps: int, reps: int) -> float:
    """Median seconds per step; one warm-up step (compilation) first."""
    run_step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(steps):
            run_step()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def jax_step_time(batch: int, patch: int, steps: int, reps: int, images) -> float:
    import jax

    from vdsr_jax.configs import pytorch_vdsr
    from vdsr_jax.data import patches
    from vdsr_jax.model import VDSR
    from vdsr_jax.optim import make_optimizer
    from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, replicated

    config = pytorch_vdsr.get_config()
    mesh = data_mesh()
    source = jax.device_put(patches.prepare_pairs(images, (2, 3, 4), (1.0,), patch), replicated(mesh))
    state = create_train_state(VDSR(depth=DEPTH, features=FEATURES), make_optimizer(config, 1000), jax.random.key(0))
    holder = {"state": jax.device_put(state, replicated(mesh))}
    step = make_sampling_train_step(mesh, batch, patch, True, config.loss_scale)
    key = jax.random.key(1)

    def run():
        holder["state"], loss = step(holder["state"], source, key)
        loss.block_until_ready()

    return time_steps(run, steps, reps)


def torch_step_time(batch: int, patch: int, steps: int, reps: int) -> float:
    import torch

    from torch_reference import Net, make_optimizer as torch_optimizer, train_step as torch_train_step

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = Net()
    optimizer = torch_optimizer(model)
    inputs, targets = torch.rand(batch, 1, patch, patch), torch.rand(batch, 1, patch, patch)
    return time_steps(lambda: torch_train_step(model, optimizer, inputs, targets, lr=0.1), steps, reps)


TORCH_VERSIONS = ("import os, platform, torch; torch.set_num_threads(os.cpu_count()); "
                  "print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}')")


def torch_versions(torch_python: str | None) -> str:
    return subprocess.run([torch_python or sys.executable, "-c", TORCH_VERSIONS],
                          capture_output=True, text=True, check=True).stdout.strip()


def torch_time(torch_python: str | None, batch: int, patch: int, steps: int, reps: int) -> float:
    """torch_reference's step time, here or in `torch_python` (this script's --torch-worker mode)."""
    if torch_python is None:
        return torch_step_time(batch, patch, steps, reps)
    done = subprocess.run([torch_python, str(Path(__file__).resolve()), "--torch-worker", "--batch", str(batch),
                           "--patch", str(patch), "--steps", str(steps), "--reps", str(reps)],
                          cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"torch worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--patch", type=int, default=41)
    parser.add_argument("--steps", type=int, default=3, help="steps per repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--torch-python", help="time torch_reference in this interpreter (default: this one)")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    if args.torch_worker:  # in a child interpreter: torch only, no jax
        print(json.dumps({"seconds": torch_step_time(args.batch[0], args.patch, args.steps, args.reps)}))
        return

    import jax
    import jaxlib

    from vdsr_jax.data import load_images

    peak, how = peak_gflops()
    print(f"jax {jax.__version__} (jaxlib {jaxlib.__version__}), Python {platform.python_version()}, "
          f"devices {jax.devices()}; {torch_versions(args.torch_python)}")
    print(f"nominal fp32 peak: {peak:.0f} GFLOP/s ({how})")
    images = load_images("skimage:astronaut,coffee")
    for batch in args.batch:
        flops = step_flops(batch, args.patch)
        results = {"vdsr_jax": jax_step_time(batch, args.patch, args.steps, args.reps, images),
                   "torch_reference": torch_time(args.torch_python, batch, args.patch, args.steps, args.reps)}
        for name, seconds in results.items():
            gflops = flops / seconds / 1e9
            print(f"batch {batch:3d} × {args.patch}²  {name:16s} {seconds * 1e3:8.1f} ms/step  "
                  f"{1 / seconds:6.2f} steps/s  {batch / seconds:7.1f} patches/s  "
                  f"{gflops:6.1f} GFLOP/s ({100 * gflops / peak:4.1f}% of peak)", flush=True)
        print(f"batch {batch:3d} ratio {results['torch_reference'] / results['vdsr_jax']:.2f} "
              "(torch ms / vdsr_jax ms; > 1 means vdsr_jax is faster)", flush=True)


if __name__ == "__main__":
    main()
