"""The VDSR Flax module on its own: shapes, parameter tree, compute dtype and initialisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdsr_jax.model import VDSR

SMALL = VDSR(depth=3)  # 64 features: conv_0 1->64, conv_1 64->64, conv_2 64->1


@pytest.fixture(scope="module")
def small_params():
    return SMALL.init(jax.random.key(2), jnp.zeros((1, 3, 3, 1)))["params"]


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 2, 5, 1), (2, 7, 1, 1), (1, 4, 3, 1)])
def test_any_batch_and_size_keeps_shape(small_params, shape):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    y = SMALL.apply({"params": small_params}, x)
    assert y.shape == shape and y.dtype == jnp.float32
    assert np.all(np.isfinite(y))


def test_output_is_input_plus_a_residual_that_depends_on_neighbours(small_params):
    x = np.zeros((1, 7, 7, 1), np.float32)
    x[0, 3, 3, 0] = 1.0
    residual = np.asarray(SMALL.apply({"params": small_params}, x) - x)[0, :, :, 0]
    assert np.count_nonzero(residual) > 1  # 3x3 convolutions spread the impulse to its neighbours
    zero_out = SMALL.apply({"params": jax.tree.map(jnp.zeros_like, small_params)}, x)
    np.testing.assert_array_equal(zero_out, x)


@pytest.mark.parametrize("depth,features,use_bias,channels",
                         [(2, 3, False, 1), (5, 8, True, 1), (4, 6, False, 3)])
def test_parameter_tree(depth, features, use_bias, channels):
    model = VDSR(depth=depth, features=features, use_bias=use_bias)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4, 4, channels)))["params"]
    assert sorted(params) == sorted(f"conv_{i}" for i in range(depth))
    for i in range(depth):
        cin = channels if i == 0 else features
        cout = channels if i == depth - 1 else features
        layer = params[f"conv_{i}"]
        assert set(layer) == ({"kernel", "bias"} if use_bias else {"kernel"})
        assert layer["kernel"].shape == (3, 3, cin, cout) and layer["kernel"].dtype == jnp.float32
        if use_bias:
            assert layer["bias"].shape == (cout,)


def test_bfloat16_compute_keeps_float32_params_and_output():
    x = np.random.default_rng(1).random((2, 9, 11, 1), dtype=np.float32)
    fp32 = VDSR(depth=4, features=8)
    bf16 = VDSR(depth=4, features=8, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(bf16.init, jax.random.key(1), x)["params"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda a: rng.normal(0, (2 / (9 * a.shape[-1])) ** 0.5, a.shape).astype(np.float32),
                          shapes)

    want = fp32.apply({"params": params}, x)
    got = bf16.apply({"params": params}, x)
    assert got.dtype == jnp.float32
    residual = np.abs(want - x).max()
    assert residual > 0.1  # the comparison below is not trivially about the identity
    assert np.abs(got - want).max() <= 0.05 * residual
    assert np.abs(got - want).max() > 0  # bf16 really was used


def test_init_is_untruncated_he_normal_on_fan_out(small_params):
    for i in range(SMALL.depth):
        kernel = np.asarray(small_params[f"conv_{i}"]["kernel"])
        expected_std = np.sqrt(2.0 / (9 * kernel.shape[-1]))
        z = kernel / expected_std
        assert abs(z.mean()) < 0.15, i
        assert abs(z.std() - 1) < 0.1, i
        # untruncated, as torch's normal_: about 4.6 % of draws lie beyond two standard deviations
        if kernel.size > 10_000:
            assert 0.03 < np.mean(np.abs(z) > 2) < 0.065, i
