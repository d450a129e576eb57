"""Inference speed and memory of vdsr_jax against torch_reference (pytorch-vdsr), same weights and input.

    python benchmarks/inference.py [--checkpoint DIR] [--sizes 512x512,2000x1500] [--reps 5] [--threads N]
                                   [--upscale-sizes 1000,3000] [--tile 512] [--torch-python PATH]

For each Y image size: milliseconds per output megapixel (median of --reps runs after one warm-up) and
peak RSS of vdsr_jax whole-image, vdsr_jax tiled (as `upscale` runs it) and torch_reference, each measured
in its own process pinned to the same --threads CPUs (torch told to use that many threads);
`ratio` = torch ms / jax ms (above 1: jax faster). Then the peak RSS of `python -m vdsr_jax.upscale_files
--scale 2` on square RGB inputs of --upscale-sizes, to show that memory follows the tile size rather than
the image size. Without --checkpoint the published
pytorch-vdsr weights in ../shared are converted into a temporary folder. `--torch-python PATH` runs the
torch worker in that interpreter (it needs only torch and numpy there; the weights reach it as an .npz
state_dict), for a Python whose jax is the newest but where torch would be a CUDA download.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO.parent / "shared" / "pretrained" / "pytorch-vdsr_model_epoch_50.pth"
IMPLEMENTATIONS = ("jax-whole", "jax-tiled", "torch")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def test_image(height: int, width: int):
    """A deterministic Y image in [0, 1] with structure at several scales."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width] / 23.0
    return np.clip(0.5 + 0.3 * np.sin(yy + 2 * np.cos(xx)) + 0.05 * rng.standard_normal((height, width)), 0, 1) \
        .astype(np.float32)


def forward_fn(implementation: str, checkpoint: str, tile: int):
    """A function Y (H×W float32) -> VDSR output that has finished computing when it returns.

    `checkpoint`: a vdsr_jax checkpoint for the jax implementations, a state_dict .npz for torch."""
    import numpy as np

    if implementation == "torch":
        return torch_forward_fn(checkpoint)
    import jax

    from vdsr_jax.checkpoint import load_model

    model, params = load_model(checkpoint)
    if implementation == "jax-whole":
        apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
        return lambda y: np.asarray(apply(params, y[None, ..., None]))
    if implementation == "jax-tiled":
        from vdsr_jax.inference import TiledVDSR

        return TiledVDSR(model, params, tile=tile)
    raise ValueError(implementation)


def torch_forward_fn(state_npz: str):
    import numpy as np
    import torch

    import torch_reference

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    net = torch_reference.Net().eval()
    with np.load(state_npz) as state:
        net.load_state_dict({k: torch.from_numpy(state[k]) for k in state.files})

    def run(y):
        with torch.inference_mode():
            return net(torch.from_numpy(y)[None, None]).numpy()

    return run


def time_worker(implementation: str, checkpoint: str, height: int, width: int, reps: int, tile: int) -> dict:
    forward = forward_fn(implementation, checkpoint, tile)
    y = test_image(height, width)
    forward(y)  # compile / warm up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        forward(y)
        times.append(time.perf_counter() - start)
    return {"ms_per_mp": statistics.median(times) * 1000 / (height * width / 1e6), "peak_rss_mib": peak_rss_mib()}


def write_upscale_input(directory: Path, side: int) -> Path:
    """A side×side RGB PNG, made here so that its making does not count in the upscale worker's memory."""
    import numpy as np

    from vdsr_jax import media

    y = test_image(side, side)
    return media.write_image(directory / f"in{side}.png", np.round(np.stack([y, y[::-1], y[:, ::-1]], -1) * 255)
                           .astype(np.uint8))


def upscale_worker(checkpoint: str, source: str, tile: int) -> dict:
    from vdsr_jax import upscale_files

    target = Path(source).with_name(f"out_{Path(source).name}")
    start = time.perf_counter()
    status = upscale_files.main([source, "--checkpoint", checkpoint, "--scale", "2", "-o", str(target),
                                 "--tile", str(tile)])
    seconds = time.perf_counter() - start
    target.unlink(missing_ok=True)
    if status != 0:
        raise SystemExit(f"upscale failed on {source}")
    return {"peak_rss_mib": peak_rss_mib(), "seconds": seconds}


def in_child(threads: int, *args, python: str = sys.executable) -> dict:
    """Run this script's worker mode in a fresh process (of `python`) on `threads` CPUs; its JSON result."""
    done = subprocess.run([python, __file__, "--threads", str(threads), "--worker", *map(str, args)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_torch_state(checkpoint: str, path: Path) -> str:
    """The checkpoint's weights as a torch_reference state_dict in an .npz (numpy only: any torch reads it)."""
    import jax
    import numpy as np

    from vdsr_jax.checkpoint import load_model
    from vdsr_jax.torch_weights import flax_to_torch

    np.savez(path, **flax_to_torch(jax.device_get(load_model(checkpoint)[1])))
    return str(path)


def versions(torch_python: str) -> str:
    import platform

    import jax
    import jaxlib

    torch = subprocess.run([torch_python, "-c", "import platform, torch; "
                            "print(f'torch {torch.__version__} (Python {platform.python_version()})')"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return f"jax {jax.__version__} (jaxlib {jaxlib.__version__}, Python {platform.python_version()}); {torch}"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'512x512,2000x1500' -> [(512, 512), (2000, 1500)]; '' -> [] (skip that part)."""
    return [tuple(int(n) for n in size.lower().split("x")) for size in text.split(",") if size]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--sizes", default="512x512,2000x1500", help="H×W of the Y inputs ('' to skip)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--upscale-sizes", default="1000,3000", help="sides of the square upscale inputs ('' to skip)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--torch-python", default=sys.executable, help="interpreter for the torch worker")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    if args.worker:  # in a child: pin to the first --threads CPUs before any framework sizes its thread pool
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
        kind, *rest = args.worker
        if kind == "upscale":
            result = upscale_worker(rest[0], rest[1], int(rest[2]))
        else:
            result = time_worker(kind, rest[0], *map(int, rest[1:]))
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = str(Path(tmp) / "ckpt")  # converted by the torch interpreter: conversion reads torch files
            subprocess.run([args.torch_python, "-m", "vdsr_jax.convert", "--from-torch", str(PRETRAINED), "--out",
                            checkpoint], cwd=REPO, check=True, capture_output=True)
        torch_state = write_torch_state(checkpoint, Path(tmp) / "torch_state.npz")
        print(versions(args.torch_python))
        print(f"CPU threads: {args.threads}; median of {args.reps} runs; tile {args.tile}")
        print("| Y input | implementation | ms per output MP | peak RSS MiB | ratio |")
        print("| --- | --- | ---: | ---: | ---: |")
        for height, width in parse_sizes(args.sizes):
            results = {impl: in_child(args.threads, impl, torch_state if impl == "torch" else checkpoint, height,
                                      width, args.reps, args.tile,
                                      python=args.torch_python if impl == "torch" else sys.executable)
                       for impl in IMPLEMENTATIONS}
            torch_ms = results["torch"]["ms_per_mp"]
            for impl, r in results.items():
                ratio = f"{torch_ms / r['ms_per_mp']:.2f}" if impl != "torch" else ""
                print(f"| {height}×{width} | {impl} | {r['ms_per_mp']:.0f} | {r['peak_rss_mib']:.0f} | {ratio} |",
                      flush=True)
        print()
        print("| upscale ×2 input | output | peak RSS MiB | seconds |")
        print("| --- | --- | ---: | ---: |")
        for side in (int(n) for n in args.upscale_sizes.split(",") if n):
            r = in_child(args.threads, "upscale", checkpoint, write_upscale_input(Path(tmp), side), args.tile)
            print(f"| {side}×{side} RGB | {2 * side}×{2 * side} | {r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
