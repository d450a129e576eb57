"""Where a VDSR train step's time goes on this CPU: each part of the step timed alone, jax and torch in one run.

    python experiments/conv_breakdown.py [--batch 16 64] [--torch-python PATH] [--reps 5]

Parts, per batch of 41×41 patches (jax: jitted, in this interpreter; torch: in --torch-python):
  step      the whole step as `train` runs it (on-device sampling + shard_map step; jax) / torch_reference's step
  sampler   `sample_patches` alone (jax)
  forward   the 20-layer forward pass
  fwd+dx    forward + the gradient w.r.t. the input only (forward + input-gradient convs, ReLU backward)
  fwd+bwd   forward + gradients w.r.t. all weights (no optimiser)
  conv      one 64→64 3×3 conv (18 of the 20 layers are this)
  dgrad     its input gradient
  wgrad     its weight gradient
Median of --reps runs (each the mean of --steps calls). Differences of the rows give the backward's parts.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATCH, DEPTH, FEATURES = 41, 20, 64


def timeit(fn, steps: int, reps: int) -> float:
    """Median milliseconds per call of `fn` (`benchmarks.train_step.time_steps`: one warm-up call first)."""
    from benchmarks.train_step import time_steps

    return time_steps(fn, steps, reps) * 1e3


def torch_parts(batch: int, steps: int, reps: int) -> dict:
    import torch
    from torch import nn

    from torch_reference import Net, make_optimizer, train_step

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    net = Net()
    opt = make_optimizer(net)
    x, y = torch.rand(batch, 1, PATCH, PATCH), torch.rand(batch, 1, PATCH, PATCH)
    out = {"step": timeit(lambda: train_step(net, opt, x, y, lr=0.1), steps, reps)}
    with torch.no_grad():
        out["forward"] = timeit(lambda: net(x), steps, reps)

    def fwd_dx():
        xi = x.clone().requires_grad_(True)
        for p in net.parameters():
            p.requires_grad_(False)
        ((net(xi) - y) ** 2).sum().backward()
        for p in net.parameters():
            p.requires_grad_(True)

    out["fwd+dx"] = timeit(fwd_dx, steps, reps)

    def fwd_bwd():
        net.zero_grad()
        ((net(x) - y) ** 2).sum().backward()

    out["fwd+bwd"] = timeit(fwd_bwd, steps, reps)
    h = torch.rand(batch, FEATURES, PATCH, PATCH)
    w = torch.randn(FEATURES, FEATURES, 3, 3) * 0.05
    g = torch.rand(batch, FEATURES, PATCH, PATCH)
    conv = lambda: nn.functional.conv2d(h, w, padding=1)  # noqa: E731
    with torch.no_grad():
        out["conv"] = timeit(conv, steps * 3, reps)
        out["dgrad"] = timeit(lambda: torch.nn.grad.conv2d_input(h.shape, w, g, padding=1), steps * 3, reps)
        out["wgrad"] = timeit(lambda: torch.nn.grad.conv2d_weight(h, w.shape, g, padding=1), steps * 3, reps)
    return out


def jax_parts(batch: int, steps: int, reps: int) -> dict:
    import jax
    import jax.numpy as jnp
    from jax import lax

    from vdsr_jax.configs import pytorch_vdsr
    from vdsr_jax.data import load_images, patches
    from vdsr_jax.model import VDSR
    from vdsr_jax.optim import make_optimizer
    from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, replicated

    config = pytorch_vdsr.get_config()
    mesh = data_mesh()
    images = load_images("skimage:astronaut,coffee")
    source = jax.device_put(patches.prepare_pairs(images, (2, 3, 4), (1.0,), PATCH), replicated(mesh))
    model = VDSR(depth=DEPTH, features=FEATURES)
    state = jax.device_put(create_train_state(model, make_optimizer(config, 1000), jax.random.key(0)),
                           replicated(mesh))
    holder = {"state": state}
    step = make_sampling_train_step(mesh, batch, PATCH, True, config.loss_scale)
    key = jax.random.key(1)

    def run_step():
        holder["state"], loss = step(holder["state"], source, key)
        loss.block_until_ready()

    out = {"step": timeit(run_step, steps, reps)}
    sampler = jax.jit(lambda s, k: patches.sample_patches(s, k, jnp.arange(batch), PATCH, True))
    out["sampler"] = timeit(lambda: jax.block_until_ready(sampler(source, key)), steps * 3, reps)

    params = holder["state"].params
    x = jax.random.uniform(jax.random.key(2), (batch, PATCH, PATCH, 1))
    y = jax.random.uniform(jax.random.key(3), (batch, PATCH, PATCH, 1))
    loss = lambda p, xi: jnp.sum((model.apply({"params": p}, xi) - y) ** 2)  # noqa: E731
    fwd = jax.jit(lambda p, xi: model.apply({"params": p}, xi))
    dx = jax.jit(jax.grad(loss, argnums=1))
    dw = jax.jit(jax.grad(loss))
    out["forward"] = timeit(lambda: fwd(params, x).block_until_ready(), steps, reps)
    out["fwd+dx"] = timeit(lambda: dx(params, x).block_until_ready(), steps, reps)
    out["fwd+bwd"] = timeit(lambda: jax.block_until_ready(dw(params, x)), steps, reps)

    h = jax.random.uniform(jax.random.key(4), (batch, PATCH, PATCH, FEATURES))
    w = jax.random.normal(jax.random.key(5), (3, 3, FEATURES, FEATURES)) * 0.05
    g = jax.random.uniform(jax.random.key(6), (batch, PATCH, PATCH, FEATURES))
    conv = lambda hh, ww: lax.conv_general_dilated(hh, ww, (1, 1), "SAME",  # noqa: E731
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    cf = jax.jit(conv)
    dg = jax.jit(lambda ww, gg: jax.vjp(lambda hh: conv(hh, ww), h)[1](gg)[0])
    wg = jax.jit(lambda hh, gg: jax.vjp(lambda ww: conv(hh, ww), w)[1](gg)[0])
    out["conv"] = timeit(lambda: cf(h, w).block_until_ready(), steps * 3, reps)
    out["dgrad"] = timeit(lambda: dg(w, g).block_until_ready(), steps * 3, reps)
    out["wgrad"] = timeit(lambda: wg(h, g).block_until_ready(), steps * 3, reps)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.torch_worker:
        print(json.dumps(torch_parts(args.batch[0], args.steps, args.reps)))
        return
    import jax

    print(f"jax {jax.__version__}, Python {platform.python_version()}; torch in {args.torch_python}")
    for batch in args.batch:
        j = jax_parts(batch, args.steps, args.reps)
        done = subprocess.run([args.torch_python, __file__, "--torch-worker", "--batch", str(batch),
                               "--steps", str(args.steps), "--reps", str(args.reps)],
                              capture_output=True, text=True, check=True, cwd=REPO)
        t = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"batch {batch}: part, jax ms, torch ms, ratio torch/jax")
        for part in ["step", "sampler", "forward", "fwd+dx", "fwd+bwd", "conv", "dgrad", "wgrad"]:
            tj, tt = j.get(part), t.get(part)
            ratio = f"{tt / tj:5.2f}" if tj and tt else ""
            print(f"  {part:8s} {tj or float('nan'):8.1f} {tt or float('nan'):8.1f} {ratio}", flush=True)


if __name__ == "__main__":
    main()
