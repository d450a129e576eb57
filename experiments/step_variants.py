"""Variants of the sampling train step on this CPU, interleaved with torch_reference's step in one run.

    python experiments/step_variants.py [--batch 16 64] [--variants base micro8 ...] [--torch-python PATH]

base        vdsr_jax.train_step.make_sampling_train_step as `train` runs it
microN      the same batch drawn at once, the gradient accumulated over micro-batches of N by lax.scan
            (summed loss: the sum of the micro-batch gradients is the batch gradient)
remat       base with jax.checkpoint on each conv+ReLU (recompute activations in the backward)
Each repetition times every contender once (steps per repetition: --steps); medians of --reps.
"""
import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PATCH = 41


def torch_worker(batch, steps, reps):
    import torch

    from torch_reference import Net, make_optimizer, train_step

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    net = Net()
    opt = make_optimizer(net)
    x, y = torch.rand(batch, 1, PATCH, PATCH), torch.rand(batch, 1, PATCH, PATCH)
    run = lambda: train_step(net, opt, x, y, lr=0.1)  # noqa: E731
    run()
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(steps):
            run()
        print(json.dumps({"ms": (time.perf_counter() - start) / steps * 1e3}), flush=True)
        sys.stdin.readline()  # wait for the parent's go: interleaved with the jax contenders


def make_micro_step(mesh, batch_size, micro, loss_scale, model_apply):
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    from vdsr_jax.data.patches import sample_patches
    from vdsr_jax.train_step import DATA_AXIS, _apply_scaled_gradients, summed_squared_error

    local_batch = batch_size // mesh.size

    def local(params, source, step_key):
        first = jax.lax.axis_index(DATA_AXIS) * local_batch
        inputs, targets = sample_patches(source, step_key, first + jnp.arange(local_batch), PATCH, True)
        shape = (local_batch // micro, micro) + inputs.shape[1:]
        local_params = jax.lax.pcast(params, DATA_AXIS, to="varying")
        grad_fn = jax.value_and_grad(summed_squared_error)

        def body(carry, xy):
            loss, grads = grad_fn(local_params, model_apply, *xy)
            return jax.tree.map(jnp.add, carry, (loss, grads)), None

        zero = jax.lax.pcast(jax.tree.map(jnp.zeros_like, (jnp.zeros((), jnp.float32), params)), DATA_AXIS, to="varying")
        (loss, grads), _ = jax.lax.scan(body, zero, (inputs.reshape(shape), targets.reshape(shape)))
        return jax.lax.psum((loss, grads), DATA_AXIS)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, source, data_key):
        step_key = jax.random.fold_in(data_key, state.step)
        loss, grads = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P()), out_specs=(P(), P()))(
            state.params, source, step_key)
        return _apply_scaled_gradients(state, loss, grads, loss_scale)

    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--variants", nargs="+", default=["base", "micro8", "micro16"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--torch-worker", action="store_true")
    args = parser.parse_args()
    if args.torch_worker:
        return torch_worker(args.batch[0], args.steps, args.reps)

    import jax
    from flax import linen as nn

    from vdsr_jax.configs import pytorch_vdsr
    from vdsr_jax.data import load_images, patches
    from vdsr_jax.model import VDSR
    from vdsr_jax.optim import make_optimizer
    from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, replicated

    print(f"jax {jax.__version__}, Python {platform.python_version()}, devices {jax.devices()}")
    config = pytorch_vdsr.get_config()
    mesh = data_mesh()
    source = jax.device_put(patches.prepare_pairs(load_images("skimage:astronaut,coffee"),
                                                         (2, 3, 4), (1.0,), PATCH), replicated(mesh))
    model = VDSR()
    state0 = create_train_state(model, make_optimizer(config, 1000), jax.random.key(0))
    key = jax.random.key(1)
    for batch in args.batch:
        steps = {}
        for v in args.variants:
            if v == "base":
                steps[v] = make_sampling_train_step(mesh, batch, PATCH, True, config.loss_scale)
            elif v.startswith("micro"):
                micro = int(v[5:])
                if batch % micro == 0 and micro < batch:
                    steps[v] = make_micro_step(mesh, batch, micro, config.loss_scale, model.apply)
            elif v == "remat":
                remat_model = VDSR()
                steps[v] = make_sampling_train_step(mesh, batch, PATCH, True, config.loss_scale)
                policy_apply = jax.checkpoint(model.apply, policy=jax.checkpoint_policies.nothing_saveable)
                state_r = create_train_state(remat_model, make_optimizer(config, 1000), jax.random.key(0))
                steps[v] = (make_sampling_train_step(mesh, batch, PATCH, True, config.loss_scale),
                            state_r.replace(apply_fn=policy_apply))
        holders, times = {}, {name: [] for name in list(steps) + ["torch"]}
        for name, step in steps.items():
            if isinstance(step, tuple):
                step, st = step
            else:
                st = state0
            holders[name] = [step, jax.device_put(jax.tree.map(lambda a: jax.numpy.array(a, copy=True), st), replicated(mesh))]
            start = time.perf_counter()
            holders[name][1], loss = step(holders[name][1], source, key)  # compile
            loss.block_until_ready()
            print(f"  batch {batch} {name}: compiled and ran once in {time.perf_counter() - start:.0f} s", flush=True)
        worker = subprocess.Popen([args.torch_python, __file__, "--torch-worker", "--batch", str(batch), "--steps",
                                   str(args.steps), "--reps", str(args.reps)], cwd=REPO, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        for _ in range(args.reps):
            times["torch"].append(json.loads(worker.stdout.readline())["ms"])
            for name, (step, st) in holders.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    st, loss = step(st, source, key)
                    loss.block_until_ready()
                holders[name][1] = st
                times[name].append((time.perf_counter() - start) / args.steps * 1e3)
                print(f"  batch {batch} {name}: {times[name][-1]:.0f} ms (torch {times['torch'][-1]:.0f} ms)", flush=True)
            worker.stdin.write("\n")
            worker.stdin.flush()
        worker.wait()
        t_ms = statistics.median(times["torch"])
        print(f"batch {batch}: torch {t_ms:.0f} ms; " + "; ".join(
            f"{n} {statistics.median(t):.0f} ms (ratio {t_ms / statistics.median(t):.2f})"
            for n, t in times.items() if n != "torch"), flush=True)


if __name__ == "__main__":
    main()
