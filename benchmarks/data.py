"""The training input path at two sizes: the 291 images (exact mode) and a generated DIV2K-size set (pool mode).

    python -m benchmarks.data [--sets 291 div2k] [--images 800] [--size 2040x1356] [--budget-mib 1024]
                              [--train-steps 3] [--gpu-rate 40000] [--sampler-only]

Each set is measured in its own process (so peak RSS is that set's): preparation time, device bytes of the
training data, peak host RSS, the on-device sampler's patches/s (batch 64 of 41×41, jitted as in the step)
and, for the pool, the host refresh rate (tiles/s and the non-overlapping 41×41 patches/s those tiles
hold). `div2k` writes `--images` PNGs of `--size` (smooth random content with noise, ~DIV2K's PNG size) to a
temporary folder, prepares them with the `div2k_hr` builder and removes everything afterwards;
`--train-steps` then runs `vdsr-train --config div2k` on them for that many steps (peak RSS of the run).
The step rate to feed is measured here (the full model, batch 64) and `--gpu-rate` stands for a GPU.
`--sampler-only` measures the sampler alone, in this process: on the 291 images' pairs, and on a full pool
of the layout `--budget-mib` gives, its tiles random pixels (the sampler's speed depends on the layout, not
on the pixels; the generated set's tiles are all full 256² ones), with no PNGs generated.
"""
import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BATCH, PATCH = 64, 41


def peak_rss_mib(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def sampler_rate(source, batches: int = 1000) -> float:
    """Patches/s that `sample_patches` sustains alone (batch 64, 41×41, augmentation on), run as the step runs
    it: the key folded from the step number on the device, and one batch at a time — a step starts when the
    one before it has finished — so neither a host-made key per batch nor calls queued behind each other
    (which on 2 cores compete with XLA's own threads) are timed. Total patches over total time.

    The patches are returned without their unit channel axis: in the step XLA:CPU writes the gather's output
    directly in the layout the first convolution reads, while returned alone as (64, 41, 41, 1) it would be
    gathered in another layout and copied once more."""
    import jax
    import jax.numpy as jnp

    from vdsr_jax.data.patches import sample_patches

    data_key = jax.random.key(0)
    draw = jax.jit(lambda s, step: tuple(patches[..., 0] for patches in sample_patches(
        s, jax.random.fold_in(data_key, step), jnp.arange(BATCH), PATCH)))
    steps = [jax.device_put(np.int32(step)) for step in range(batches + 1)]
    jax.block_until_ready(draw(source, steps[-1]))
    start = time.perf_counter()
    for step in steps[:batches]:
        jax.block_until_ready(draw(source, step))
    return batches * BATCH / (time.perf_counter() - start)


def step_rate(steps: int = 2) -> float:
    """Patches/s of the full training step (VDSR 20×64, batch 64 of 41×41) on this machine's devices."""
    import jax

    from vdsr_jax.configs import x234
    from vdsr_jax.data import load_images, patches
    from vdsr_jax.model import VDSR
    from vdsr_jax.optim import make_optimizer
    from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, replicated

    mesh = data_mesh()
    source = jax.device_put(patches.prepare_pairs(load_images("skimage:astronaut"), (2,), (1.0,), PATCH),
                            replicated(mesh))
    state = jax.device_put(create_train_state(VDSR(), make_optimizer(x234.get_config(), 100), jax.random.key(0)),
                           replicated(mesh))
    step = make_sampling_train_step(mesh, BATCH, PATCH)
    state, loss = step(state, source, jax.random.key(1))
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = step(state, source, jax.random.key(1))
    loss.block_until_ready()
    return steps * BATCH / (time.perf_counter() - start)


def pairs_291(data_dir: Path):
    """The 291 images and their exact-mode pairs (x234's scales and downsizes), with the seconds to load them
    (TFDS preparation included) and to load and prepare the pairs."""
    from vdsr_jax.data import load_images, patches

    start = time.perf_counter()
    images = load_images("train291", data_dir, SHARED / "train291")
    loaded = time.perf_counter() - start
    source = patches.prepare_pairs(images, (2, 3, 4), (1.0, 0.7, 0.5), PATCH)
    return images, source, loaded, time.perf_counter() - start


def pool_stand_in(budget_mib: float):
    """A full pool of the div2k config's layout at `budget_mib`: every slot a 256² tile of random pixels."""
    from vdsr_jax.configs import div2k
    from vdsr_jax.data import pool
    from vdsr_jax.data.patches import PatchSource

    config = div2k.get_config()
    config.data.device_budget_mib = budget_mib
    layout = pool.layout_from_config(config.data, PATCH)
    rng = np.random.default_rng(0)
    pixels = layout.slots * layout.tile**2
    sides = np.full(layout.slots, layout.tile, np.int32)
    return PatchSource(rng.random(pixels, np.float32), rng.random(pixels, np.float32),
                       (np.arange(layout.slots) * layout.tile**2).astype(np.int32), sides, sides,
                       rng.choice(np.asarray(config.scales, np.int32), layout.slots))


def sampler_only(sets, budget_mib: float) -> None:
    import jax

    for name in sets:
        if name == "291":
            tmp = Path(tempfile.mkdtemp(prefix="vdsr_data_bench_"))
            try:
                source = pairs_291(tmp / "tfds")[1]
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            label = f"291 images (exact, {len(source.heights)} variants)"
        else:
            source = pool_stand_in(budget_mib)
            label = f"pool of {len(source.heights)} tiles of 256² (budget {budget_mib:g} MiB)"
        rate = sampler_rate(jax.device_put(source))
        print(f"{label}: sampler {rate:.0f} patches/s (load average {os.getloadavg()[0]:.1f})")


def measure_291(data_dir: Path) -> dict:
    import jax

    images, source, loaded, prepared = pairs_291(data_dir)
    device_source = jax.device_put(source)
    return {"set": "291 images (exact)", "images": len(images),
            "hr_mpixels": sum(im.shape[0] * im.shape[1] for im in images) / 1e6,
            "prepare_s": prepared, "load_s": loaded,
            "device_mib": sum(a.nbytes for a in jax.tree.leaves(device_source)) / 2**20,
            "sampler_patches_per_s": sampler_rate(device_source), "peak_rss_mib": peak_rss_mib()}


def _write_one(args):
    path, height, width, seed = args
    import imagecodecs

    rng = np.random.default_rng(seed)
    small = rng.random((height // 32 + 2, width // 32 + 2, 3))
    smooth = np.kron(small, np.ones((32, 32, 1)))[:height, :width]  # blocky shapes with mild noise
    image = np.clip(smooth * 200 + rng.normal(0, 4, (height, width, 3)) + 20, 0, 255).astype(np.uint8)
    Path(path).write_bytes(imagecodecs.png_encode(image, level=1))


def generate(root: Path, count: int, height: int, width: int) -> float:
    from concurrent.futures import ProcessPoolExecutor

    folder = root / "DIV2K_train_HR"
    folder.mkdir(parents=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as workers:
        list(workers.map(_write_one, [(folder / f"{i:04d}.png", height, width, i) for i in range(1, count + 1)]))
    return time.perf_counter() - start


def measure_div2k(data_dir: Path, manual: Path, budget_mib: float) -> dict:
    import jax

    from vdsr_jax.configs import div2k
    from vdsr_jax.data import patches, pool
    from vdsr_jax.data.sources import image_store, read_shapes

    config = div2k.get_config()
    config.data.device_budget_mib = budget_mib
    start = time.perf_counter()
    store = image_store("div2k_hr", data_dir, manual)
    prepared = time.perf_counter() - start
    shapes = read_shapes(store)
    headers = time.perf_counter() - start - prepared
    catalogue = patches.catalogue(shapes, config.scales, config.downsizes, PATCH)
    layout = pool.layout_from_config(config.data, PATCH)
    workers = max(1, (os.cpu_count() or 2) // 2)
    tiles = pool.TilePool(store, catalogue, layout, seed=0, sharding=None, workers=workers)
    start = time.perf_counter()
    source = tiles.source_for(0)
    jax.block_until_ready(source)
    fill = time.perf_counter() - start
    start, refreshes = time.perf_counter(), 3
    for epoch in range(1, refreshes + 1):
        tiles.build([(g, epoch) for g in pool.groups_refreshed_at(epoch, layout)])
    tiles_per_s = refreshes * layout.refresh_tiles / (time.perf_counter() - start)
    rate = sampler_rate(source)
    tiles.close()
    return {"set": f"{len(store)} × {shapes[0][1]}×{shapes[0][0]} (pool)", "images": len(store),
            "hr_mpixels": float((shapes[:, 0] * shapes[:, 1]).sum()) / 1e6, "prepare_s": prepared,
            "headers_s": headers, "fill_s": fill, "slots": layout.slots, "tile": layout.tile,
            "device_mib": layout.device_bytes / 2**20, "budget_mib": budget_mib,
            "host_estimate_mib": pool.host_bytes(layout, shapes, workers) / 2**20,
            "refresh_tiles_per_s": tiles_per_s, "refresh_tiles": layout.refresh_tiles,
            "refresh_every_steps": layout.refresh_every,
            "refresh_patches_per_s": tiles_per_s * (layout.tile // PATCH) ** 2,
            "sampler_patches_per_s": rate, "peak_rss_mib": peak_rss_mib()}


def train_run(data_dir: Path, manual: Path, steps: int, budget_mib: float, host_budget_mib: float) -> dict:
    """`vdsr-train --config div2k` for `steps` steps on the generated set: wall time and peak RSS."""
    workdir = data_dir.parent / "run"
    command = [sys.executable, "-m", "vdsr_jax.train", "--config", "div2k", f"--workdir={workdir}",
               f"--config.data_dir={data_dir}", f"--config.train_manual_dir={manual}",
               f"--config.eval_sets.set5={SHARED / 'benchmarks'}",
               f"--config.eval_sets.set14={SHARED / 'benchmarks'}",
               f"--config.num_steps={steps}", "--config.eval_scales=(2,)", "--config.log_every_steps=1",
               f"--config.data.device_budget_mib={budget_mib}", f"--config.data.host_budget_mib={host_budget_mib}",
               "--config.comparison_images=0"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["patches_per_second"] for r in records if "patches_per_second" in r][1:]  # after compiling
    data_line = next(line for line in done.stdout.splitlines() if line.startswith("data:"))
    return {"train_steps": steps, "host_budget_mib": host_budget_mib, "train_wall_s": wall,
            "train_peak_rss_mib": peak_rss_mib(resource.RUSAGE_CHILDREN),
            "train_patches_per_s": float(np.median(rates)) if rates else None, "train_data_line": data_line}


def child(args) -> None:
    data_dir = Path(args.tmp) / "tfds"
    if args.measure == "291":
        result = measure_291(data_dir)
    elif args.measure == "div2k":
        result = measure_div2k(data_dir, Path(args.tmp) / "DIV2K", args.budget_mib)
    elif args.measure == "train":
        result = train_run(data_dir, Path(args.tmp) / "DIV2K", args.train_steps, args.budget_mib,
                           args.host_budget_mib)
    else:
        result = {"step_patches_per_s": step_rate()}
    print("RESULT " + json.dumps(result))


def run_child(kind: str, args, tmp: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.data", "--measure", kind, "--tmp", str(tmp),
               f"--budget-mib={args.budget_mib}", f"--host-budget-mib={args.host_budget_mib}",
               f"--train-steps={args.train_steps}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{kind}: {done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["291", "div2k"], choices=["291", "div2k"])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", default="2040x1356", help="W×H of the generated images")
    parser.add_argument("--budget-mib", type=float, default=1024.0)
    parser.add_argument("--host-budget-mib", type=float, default=1024.0)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--gpu-rate", type=float, default=40000.0, help="patches/s of a GPU step to feed")
    parser.add_argument("--sampler-only", action="store_true", help="only the on-device sampler's patches/s")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return child(args)
    if args.sampler_only:
        return sampler_only(args.sets, args.budget_mib)
    width, height = map(int, args.size.lower().split("x"))
    step = run_child("step", args, Path("."))["step_patches_per_s"]
    print(f"train step here: {step:.1f} patches/s (batch {BATCH}); GPU figure used: {args.gpu_rate:.0f} patches/s")
    for name in args.sets:
        tmp = Path(tempfile.mkdtemp(prefix="vdsr_data_bench_"))
        try:
            if name == "div2k":
                seconds = generate(tmp / "DIV2K", args.images, height, width)
                size = sum(p.stat().st_size for p in (tmp / "DIV2K").rglob("*.png")) / 2**30
                print(f"generated {args.images} PNGs of {width}×{height} ({size:.2f} GiB) in {seconds:.0f} s")
            result = run_child(name, args, tmp)
            if name == "div2k" and args.train_steps:
                result.update(run_child("train", args, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        sampler = result["sampler_patches_per_s"]
        print(json.dumps(result, indent=1))
        print(f"{result['set']}: sampler {sampler:.0f} patches/s = {sampler / step:.0f}× the step here, "
              f"{sampler / args.gpu_rate:.2f}× the GPU rate; device {result['device_mib']:.0f} MiB; "
              f"peak host RSS {result['peak_rss_mib']:.0f} MiB")
        if "refresh_tiles_per_s" in result:
            # The step waits at a refresh the host has not finished: it keeps up with (tiles/s) × (patches
            # drawn per tile replaced) patches/s, and the pool feeds the lesser of that and the sampler.
            tiles, every, count = result["refresh_tiles_per_s"], result["refresh_every_steps"], result["refresh_tiles"]
            fed = min(sampler, tiles * every * BATCH / count)
            need = math.ceil(3 * args.gpu_rate / BATCH * count / tiles)
            print(f"  host refresh: {tiles:.1f} tiles/s; {count} tiles due every {every} steps, so the pool feeds "
                  f"{fed:.0f} patches/s = {fed / step:.0f}× the step here, {fed / args.gpu_rate:.2f}× the GPU rate "
                  f"(3× the GPU rate needs data.refresh_every_steps ≥ {need}; non-overlapping patches in fresh "
                  f"tiles: {result['refresh_patches_per_s']:.0f}/s)")


if __name__ == "__main__":
    main()
