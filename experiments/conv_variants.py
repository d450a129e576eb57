"""Full-VDSR CPU timings of conv implementations in JAX (lax conv, Winograd F(2)/F(4)/F(6); 1 or all host
devices) against torch_reference, in one run, so the ratios share the machine's load.

    python -m experiments.conv_variants [--batch 16 64] [--images 512x512 2000x1500] [--variants plain F2 F4]
                                       [--devices 1 2] [--reps 5]

Train step: summed squared error, value_and_grad, clip 0.4 + SGD momentum 0.9 + weight decay (torch_reference's
step), 41×41 patches, the batch split over a `data` mesh by shard_map. Inference: the whole Y image at once; with
D devices the image is cut into D row bands with `depth` rows of overlap, one per device (exact). Contenders
are interleaved repetition by repetition; `ratio` = torch ms / jax ms (> 1: jax faster).
"""
import os

CORES = len(os.sched_getaffinity(0))  # the cores this process may use (taskset-aware, unlike os.cpu_count)
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={CORES}").strip()

import argparse  # noqa: E402
import functools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from jax import lax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from torch_reference import Net, make_optimizer as torch_optimizer, train_step as torch_train_step  # noqa: E402
from experiments import winograd  # noqa: E402
from vdsr_jax.model import VDSR  # noqa: E402

DEPTH = 20


def plain_conv(x, k):
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


CONVS = {"plain": plain_conv, **{f"F{m}": functools.partial(winograd.conv3x3_same, m=m) for m in (2, 4, 6)}}


def vdsr(params, x, conv):
    """VDSR's forward with a pluggable conv, on the Flax model's parameter tree."""
    h = x
    for i in range(DEPTH):
        h = conv(h, params[f"conv_{i}"]["kernel"])
        if i < DEPTH - 1:
            h = jax.nn.relu(h)
    return x + h


def jax_train_step(conv, devices, batch, patch=41):
    """A closure running one step (state kept inside) of the shard_map'ed train step."""
    mesh = Mesh(np.asarray(devices), ("data",))
    params = VDSR(depth=DEPTH).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    tx = optax.chain(optax.clip_by_global_norm(0.4), optax.add_decayed_weights(1e-4), optax.sgd(0.1, 0.9))

    def local(params, x, y):
        params = jax.lax.pcast(params, "data", to="varying")
        loss, grads = jax.value_and_grad(lambda p: jnp.sum(jnp.square(vdsr(p, x, conv) - y)))(params)
        return jax.lax.psum((loss, grads), "data")

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt, x, y):
        loss, grads = jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data"), P("data")),
                                    out_specs=(P(), P()))(params, x, y)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(0)
    x, y = (jax.device_put(rng.random((batch, patch, patch, 1), np.float32), data) for _ in range(2))
    holder = [jax.device_put(params, rep), jax.device_put(tx.init(params), rep)]

    def run():
        holder[0], holder[1], loss = step(holder[0], holder[1], x, y)
        loss.block_until_ready()

    return run


def jax_inference(conv, devices, height, width):
    """A closure running the net on a height×width image: D row bands with DEPTH rows overlap, one per device."""
    d = len(devices)
    mesh = Mesh(np.asarray(devices), ("data",))
    params = jax.device_put(VDSR(depth=DEPTH).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"],
                            NamedSharding(mesh, P()))
    image = np.random.default_rng(0).random((height, width), np.float32)
    band = -(-height // d)
    starts = [min(max(i * band - DEPTH, 0), height - min(height, band + 2 * DEPTH)) for i in range(d)]
    size = min(height, band + 2 * DEPTH) if d > 1 else height
    windows = np.stack([image[s:s + size] for s in starts])[..., None]
    x = jax.device_put(windows, NamedSharding(mesh, P("data")))
    apply = jax.jit(lambda p, x: vdsr(p, x, conv), out_shardings=NamedSharding(mesh, P("data")))

    def run():
        np.asarray(apply(params, x))

    return run


def torch_step(batch, patch=41):
    torch.manual_seed(0)
    model = Net()
    opt = torch_optimizer(model)
    x, y = torch.rand(batch, 1, patch, patch), torch.rand(batch, 1, patch, patch)
    return lambda: torch_train_step(model, opt, x, y, lr=0.1)


def torch_inference(height, width):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.rand(1, 1, height, width)

    def run():
        with torch.no_grad():
            model(x).numpy()

    return run


def compare(title, contenders, reps):
    """Warm up each, then `reps` interleaved rounds; prints median ms and torch/jax ratios."""
    for run in contenders.values():
        run()
    times = {name: [] for name in contenders}
    for _ in range(reps):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"== {title}")
    for name, t in med.items():
        ratio = "" if name == "torch" else f"  ratio {med['torch'] / t:5.2f}"
        print(f"  {name:14s} {t * 1e3:9.1f} ms  (min {min(times[name]) * 1e3:9.1f}){ratio}", flush=True)
    return med


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--images", nargs="*", default=["512x512", "2000x1500"], help="HxW")
    parser.add_argument("--variants", nargs="+", default=["plain", "F2", "F4"], choices=list(CONVS))
    parser.add_argument("--devices", type=int, nargs="+", default=sorted({1, jax.device_count()}))
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(CORES)
    print(f"jax {jax.__version__} {jax.device_count()} host devices; torch {torch.__version__} "
          f"{torch.get_num_threads()} threads; {CORES} cores; load {os.getloadavg()[0]:.1f}", flush=True)
    variants = [(v, d) for v in args.variants for d in args.devices]
    for batch in args.batch:
        contenders = {"torch": torch_step(batch)}
        contenders |= {f"{v} {d}dev": jax_train_step(CONVS[v], jax.devices()[:d], batch) for v, d in variants}
        compare(f"train step, batch {batch} × 41²", contenders, args.reps)
    for size in args.images:
        h, w = map(int, size.split("x"))
        contenders = {"torch": torch_inference(h, w)}
        contenders |= {f"{v} {d}dev": jax_inference(CONVS[v], jax.devices()[:d], h, w) for v, d in variants}
        compare(f"inference {h}×{w}", contenders, args.reps)


if __name__ == "__main__":
    main()
