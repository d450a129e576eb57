"""Winograd conv3x3_same against lax.conv_general_dilated: values, gradients, odd and tiny sizes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from experiments import winograd

# Max-abs forward error allowed on unit-normal inputs with a unit-gain kernel (measured ~1e-6, ~1e-5, ~3e-5).
FORWARD_TOL = {2: 5e-6, 4: 5e-5, 6: 2e-4}


def reference(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)


def random_case(shape, cout, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, shape[-1], cout)) / np.sqrt(9 * shape[-1])).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(kernel)


@pytest.mark.parametrize("m", [2, 4, 6])
def test_transforms_satisfy_identity(m):
    at, g, bt = winograd.transforms(m)
    d, k = np.random.default_rng(1).standard_normal((2, m + 2))[0], np.random.default_rng(2).standard_normal(3)
    np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), np.correlate(d, k, "valid"), atol=1e-12)


@pytest.mark.parametrize("m", [2, 4, 6])
@pytest.mark.parametrize("shape,cout", [((1, 1, 1, 1), 1), ((2, 5, 7, 3), 4), ((1, 9, 2, 1), 8), ((2, 13, 11, 16), 16)])
def test_forward_matches_lax(m, shape, cout):
    x, kernel = random_case(shape, cout)
    out = winograd.conv3x3_same(x, kernel, m)
    assert out.shape == (*shape[:3], cout)
    assert float(jnp.max(jnp.abs(out - reference(x, kernel)))) < FORWARD_TOL[m]


@pytest.mark.parametrize("m", [2, 4, 6])
def test_gradients_match_lax(m):
    x, kernel = random_case((2, 11, 9, 8), 8, seed=3)
    weights = jnp.asarray(np.random.default_rng(4).standard_normal((2, 11, 9, 8)), jnp.float32)

    def loss(conv):
        return lambda x, k: jnp.sum(weights * conv(x, k))

    got = jax.grad(loss(lambda x, k: winograd.conv3x3_same(x, k, m)), argnums=(0, 1))(x, kernel)
    want = jax.grad(loss(reference), argnums=(0, 1))(x, kernel)
    for g, w in zip(got, want):
        assert float(jnp.linalg.norm(g - w) / jnp.linalg.norm(w)) < 10 * FORWARD_TOL[m]


def test_flax_conv_hook_matches_default():
    """`conv_general_dilated(m)` plugs into flax's nn.Conv (how model.VDSR would opt in)."""
    from flax import linen as nn

    x = jnp.asarray(np.random.default_rng(5).random((2, 10, 7, 3)), jnp.float32)
    default = nn.Conv(8, (3, 3), padding="SAME", use_bias=False)
    hooked = nn.Conv(8, (3, 3), padding="SAME", use_bias=False, conv_general_dilated=winograd.conv_general_dilated(2))
    params = default.init(jax.random.key(0), x)
    np.testing.assert_allclose(hooked.apply(params, x), default.apply(params, x), atol=1e-5)
