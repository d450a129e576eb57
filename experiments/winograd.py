"""3×3 'SAME' convolution by Winograd F(m×m, 3×3) as batched matmuls, a drop-in for `lax.conv_general_dilated`.

Why: XLA's CPU convolution reaches a fraction of oneDNN's speed, while its matmuls are closer to peak.
Winograd turns a 3×3 conv into (m+2)² independent [tiles, Cin] @ [Cin, Cout] matmuls, doing 9m²/(m+2)²
fewer multiplies (2.25× for m=2, 4× for m=4, 5.06× for m=6), plus tile transforms (memory-bound). The
price is rounding error growing with m. Gradients come from JAX autodiff (all steps are linear in x and in
the kernel, so the backward is again transforms + batched matmuls).

Measured on 2 CPU cores (benchmarks/conv_variants.py): the transforms and layout shuffles eat most of the
saving, so this is not faster than XLA's own conv for VDSR; it is kept as a tested, opt-in experiment.
"""
import functools
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
from jax import lax

# Interpolation points (the point at infinity is added); the usual low-error choices.
POINTS = {
    2: (0, 1, -1),
    4: (0, 1, -1, 2, -2),
    6: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)),
}


@functools.lru_cache(maxsize=None)
def transforms(m: int, r: int = 3):
    """(AT [m,a], G [a,r], BT [a,a]) of Winograd F(m, r), a = m + r − 1, from Cook–Toom points.

    AT and G are the Vandermonde forms (G scaled by 1/∏(p_j − p_l), as in Lavin & Gray); BT is then the unique
    matrix with Σ_j AT[i,j]·G[j,k]·BT[j,t] = [t == i + k], i.e. y = AT((G g) ⊙ (BT d)) is the correlation.
    """
    points = [Fraction(p) for p in POINTS[m]]
    a = m + r - 1
    assert len(points) == a - 1
    at = np.zeros((m, a))
    g = np.zeros((a, r))
    for j, p in enumerate(points):
        scale = np.prod([float(p - q) for q in points if q != p])
        at[:, j] = [float(p**i) for i in range(m)]
        g[j] = [float(p**k) / scale for k in range(r)]
    at[m - 1, a - 1] = 1.0
    g[a - 1, r - 1] = 1.0
    # Solve the identity for BT row by row: for row j, unknowns BT[j, :]; equations over (i, k, t).
    system = np.zeros((m * r * a, a * a))
    target = np.zeros(m * r * a)
    row = 0
    for i in range(m):
        for k in range(r):
            for t in range(a):
                for j in range(a):
                    system[row, j * a + t] = at[i, j] * g[j, k]
                target[row] = float(t == i + k)
                row += 1
    bt = np.linalg.lstsq(system, target, rcond=None)[0].reshape(a, a)
    bt = np.round(bt * 64) / 64  # the exact solution is dyadic for these points; drop lstsq noise
    assert np.allclose(system @ bt.ravel(), target, atol=1e-12), "Winograd transform identity fails"
    return at, g, bt


def conv3x3_same(x, kernel, m: int = 4):
    """Cross-correlation of NHWC `x` with an HWIO 3×3 `kernel`, stride 1, zero 'SAME' padding, by F(m×m, 3×3).

    Same result as `lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO',
    'NHWC'))` up to rounding (see tests/test_winograd.py for the error sizes).
    """
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"need a 3×3 kernel, got {kernel.shape}")
    at, g, bt = transforms(m)
    a = m + 2
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]
    th, tw = -(-h // m), -(-w // m)  # tiles along each axis
    # 1 pixel of 'SAME' padding before; after, zeros up to th+1 whole blocks of m (they only feed cropped outputs).
    xp = jnp.pad(x, ((0, 0), (1, (th + 1) * m - h - 1), (1, (tw + 1) * m - w - 1), (0, 0)))
    # a×a tiles at stride m from contiguous m-blocks: block t plus the first 2 rows/cols of block t+1 (reshapes
    # and slices, whose gradients are cheap, unlike strided gathers).
    b = xp.reshape(n, th + 1, m, tw + 1, m, cin)
    b = jnp.concatenate([b[:, :th], b[:, 1:, :2]], axis=2)
    b = jnp.concatenate([b[:, :, :, :tw], b[:, :, :, 1:, :2]], axis=4)  # [n, th, a, tw, a, cin]
    tiles = b.transpose(2, 4, 0, 1, 3, 5).reshape(a * a, n * th * tw * cin)
    # Input transform V = BT d B as one [a², a²] @ [a², tiles·cin] matmul (measured faster here, forward and
    # backward, than separable elementwise sums, which XLA CPU fuses poorly).
    v = (jnp.asarray(np.kron(bt, bt), x.dtype) @ tiles).reshape(a * a, n * th * tw, cin)
    # Kernel transform U = G g Gᵀ, then one [tiles, cin] @ [cin, cout] matmul per tile position.
    u = jnp.einsum("ki,lj,ijco->klco", g.astype(np.float32), g.astype(np.float32), kernel,
                   precision=lax.Precision.HIGHEST).reshape(a * a, cin, cout).astype(x.dtype)
    prod = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,)))).reshape(a * a, n * th * tw * cout)
    # Output transform Y = AT M A, likewise one matmul; then the m×m output tiles back into the image.
    y = (jnp.asarray(np.kron(at, at), x.dtype) @ prod).reshape(m, m, n, th, tw, cout)
    y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, th * m, tw * m, cout)
    return y[:, :h, :w]


def conv_general_dilated(m: int = 4):
    """A `lax.conv_general_dilated` stand-in for `flax.linen.Conv(conv_general_dilated=...)` that routes
    stride-1 3×3 'SAME' NHWC convs to `conv3x3_same` (anything else falls back to lax)."""

    def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
             feature_group_count=1, precision=None, preferred_element_type=None):
        simple = (tuple(window_strides) == (1, 1) and rhs.shape[:2] == (3, 3) and feature_group_count == 1
                  and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
                  and (rhs_dilation is None or tuple(rhs_dilation) == (1, 1))
                  and padding in ("SAME", ((1, 1), (1, 1)), [(1, 1), (1, 1)])
                  and dimension_numbers is not None and tuple(dimension_numbers.lhs_spec) == (0, 3, 1, 2))
        if simple:
            return conv3x3_same(lhs, rhs, m)
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision,
                                        preferred_element_type=preferred_element_type)

    return conv
