"""Minimal micro-batching check (no shard_map, no torch): gradient of the summed loss of a batch of 64
41×41 patches at once vs accumulated over micro-batches by lax.scan; compile and run times printed."""
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, ".")
from vdsr_jax.model import VDSR  # noqa: E402

BATCH = int(sys.argv[1]) if len(sys.argv) > 1 else 64
model = VDSR()
params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
x = jax.random.uniform(jax.random.key(1), (BATCH, 41, 41, 1))
y = jax.random.uniform(jax.random.key(2), (BATCH, 41, 41, 1))
loss = lambda p, a, b: jnp.sum((model.apply({"params": p}, a) - b) ** 2)  # noqa: E731
grad = jax.value_and_grad(loss)


def micro(m):
    def f(p, a, b):
        def body(c, ab):
            return jax.tree.map(jnp.add, c, grad(p, *ab)), None
        zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, p))
        shape = (BATCH // m, m, 41, 41, 1)
        return jax.lax.scan(body, zero, (a.reshape(shape), b.reshape(shape)))[0]
    return f


def unrolled(m):
    def f(p, a, b):
        parts = [grad(p, a[i:i + m], b[i:i + m]) for i in range(0, BATCH, m)]
        return jax.tree.map(lambda *t: sum(t), *parts)
    return f


KINDS = sys.argv[2].split(",") if len(sys.argv) > 2 else ["whole", "unrolled16"]
fns = {}
for k in KINDS:
    n = k.lstrip("abcdefghijklmnopqrstuvwxyz")
    fns[k] = jax.jit(grad if k == "whole" else (unrolled if k.startswith("unrolled") else micro)(int(n)))
for name, f in fns.items():
    t = time.perf_counter()
    jax.block_until_ready(f(params, x, y))
    print(f"{name}: compile+first {time.perf_counter() - t:.1f} s", flush=True)
times = {n: [] for n in fns}
for _ in range(3):
    for name, f in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(f(params, x, y))
        times[name].append(time.perf_counter() - t)
print(f"jax {jax.__version__}, batch {BATCH}: " + "; ".join(f"{n} {statistics.median(t) * 1e3:.0f} ms" for n, t in times.items()))
