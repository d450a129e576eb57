"""Ways to express one 64→64 3×3 conv's weight gradient in XLA on this CPU, timed in one run, checked equal.

    python experiments/wgrad_variants.py [--batch 16 64] [--reps 5]

lax       jax.vjp of lax.conv_general_dilated w.r.t. the kernel (what autodiff emits: a conv with N as features)
im2col    the 9 shifted windows of the zero-padded input concatenated to (N·H·W, 9·Cin), one matmul with dy
taps9     9 matmuls, one per tap: window(kh, kw)ᵀ · dy
patches   lax.conv_general_dilated_patches (im2col by XLA) then one matmul
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PATCH, C = 41, 64


def lax_wgrad(x, g, w_shape):
    conv = lambda w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa
    return jax.vjp(conv, jnp.zeros(w_shape, x.dtype))[1](g)[0]


def windows(x):
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)]


def im2col_wgrad(x, g, w_shape):
    cols = jnp.concatenate(windows(x), axis=-1)  # (n, h, w, 9·cin), taps major
    k = jnp.einsum("nhwk,nhwo->ko", cols, g, precision=lax.Precision.HIGHEST)
    return k.reshape(w_shape)


def taps9_wgrad(x, g, w_shape):
    taps = [jnp.einsum("nhwc,nhwo->co", win, g, precision=lax.Precision.HIGHEST) for win in windows(x)]
    return jnp.stack(taps).reshape(w_shape)


def patches_wgrad(x, g, w_shape):
    # feature dim of the patches is cin-major: (cin, kh, kw)
    p = lax.conv_general_dilated_patches(x, (3, 3), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    k = jnp.einsum("nhwk,nhwo->ko", p, g, precision=lax.Precision.HIGHEST)  # (cin·9, cout)
    return k.reshape(w_shape[2], 3, 3, w_shape[3]).transpose(1, 2, 0, 3)


def im2col2d_wgrad(x, g, w_shape):
    cols = jnp.concatenate(windows(x), axis=-1).reshape(-1, 9 * x.shape[-1])
    return jnp.dot(cols.T, g.reshape(-1, g.shape[-1])).reshape(w_shape)


def taps2d_wgrad(x, g, w_shape):
    g2 = g.reshape(-1, g.shape[-1])
    return jnp.stack([jnp.dot(win.reshape(-1, x.shape[-1]).T, g2) for win in windows(x)]).reshape(w_shape)


def nchw_wgrad(x, g, w_shape):
    xt, gt = x.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2)  # timed as if the model ran NCHW: see nchw_only
    conv = lambda w: lax.conv_general_dilated(xt, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))  # noqa
    return jax.vjp(conv, jnp.zeros((w_shape[3], w_shape[2], 3, 3), x.dtype))[1](gt)[0].transpose(2, 3, 1, 0)


VARIANTS = {"lax": lax_wgrad, "im2col": im2col_wgrad, "taps9": taps9_wgrad, "patches": patches_wgrad,
            "im2col2d": im2col2d_wgrad, "taps2d": taps2d_wgrad, "nchw": nchw_wgrad}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__}")
    for batch in args.batch:
        x = jax.random.uniform(jax.random.key(0), (batch, PATCH, PATCH, C))
        g = jax.random.normal(jax.random.key(1), (batch, PATCH, PATCH, C))
        shape = (3, 3, C, C)
        fns = {name: jax.jit(lambda x, g, f=f: f(x, g, shape)) for name, f in VARIANTS.items()}
        ref = np.asarray(fns["lax"](x, g))
        times = {name: [] for name in fns}
        for name, f in fns.items():
            got = np.asarray(f(x, g))
            err = np.abs(got - ref).max() / np.abs(ref).max()
            assert err < 1e-4, (name, err)
        for _ in range(args.reps):  # interleaved repetition by repetition
            for name, f in fns.items():
                start = time.perf_counter()
                for _ in range(3):
                    f(x, g).block_until_ready()
                times[name].append((time.perf_counter() - start) / 3 * 1e3)
        base = statistics.median(times["lax"])
        print(f"batch {batch}: " + "  ".join(f"{n} {statistics.median(t):.1f} ms ({base / statistics.median(t):.2f}×)"
                                            for n, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
