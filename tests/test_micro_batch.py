"""The CPU train step's micro-batching (unrolled chunks, gradients summed) equals the whole-batch gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdsr_jax.model import VDSR
from vdsr_jax.train_step import _loss_and_grads


@pytest.mark.parametrize("batch,micro", [(32, 16), (24, 8), (12, 16), (20, 8)])  # the last two: taken whole
def test_micro_batched_gradient_equals_whole_batch(batch, micro):
    model = VDSR(depth=4, features=8)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    inputs = jax.random.uniform(jax.random.key(1), (batch, 13, 13, 1))
    targets = jax.random.uniform(jax.random.key(2), (batch, 13, 13, 1))
    whole = jax.jit(lambda p: _loss_and_grads(p, model.apply, inputs, targets, micro_batch=batch))(params)
    chunked = jax.jit(lambda p: _loss_and_grads(p, model.apply, inputs, targets, micro_batch=micro))(params)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5 * float(np.abs(a).max()))
