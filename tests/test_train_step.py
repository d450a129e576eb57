"""The train step (vdsr_jax.train_step) on one device against a step computed here with optax; the sampling
step against the sampler's own patches, which are crops of the pairs. N devices against one is in
test_train (subprocess), micro-batching in test_micro_batch, steps against torch in test_parity."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vdsr_jax.data.patches import prepare_pairs, sample_patches
from vdsr_jax.model import VDSR
from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, make_train_step, replicated

MODEL = VDSR(depth=3, features=8)
LR = 0.05


def fresh_state(seed=0):
    mesh = data_mesh(jax.devices()[:1])
    state = create_train_state(MODEL, optax.sgd(LR), jax.random.key(seed))
    assert int(state.step) == 0
    return mesh, jax.device_put(state, replicated(mesh))


def expected_step(params, inputs, targets, loss_scale):
    """loss_scale · Σ (VDSR(x) − y)², its gradient by jax.grad, and the optax SGD update of it."""
    def loss(p):
        return loss_scale * jnp.sum((MODEL.apply({"params": p}, inputs) - targets) ** 2)

    value, grads = jax.value_and_grad(loss)(params)
    updates, _ = optax.sgd(LR).update(grads, optax.sgd(LR).init(params))
    return float(value), optax.apply_updates(params, updates)


@pytest.mark.parametrize("loss_scale", [1.0, 0.5 / 4])
def test_one_step_on_one_device_is_an_optax_sgd_step_on_the_summed_squared_error(loss_scale):
    rng = np.random.default_rng(0)
    inputs = rng.random((4, 9, 9, 1), dtype=np.float32)
    targets = rng.random((4, 9, 9, 1), dtype=np.float32)
    mesh, state = fresh_state()
    before = jax.tree.map(np.asarray, state.params)
    loss_value, expected = expected_step(before, inputs, targets, loss_scale)
    state, loss = make_train_step(mesh, loss_scale)(state, inputs, targets)
    assert int(state.step) == 1
    assert float(loss) == pytest.approx(loss_value, rel=1e-5)  # the loss before the update
    for got, want, old in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected), jax.tree.leaves(before)):
        assert not np.array_equal(want, old)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want - old).max())


def pairs():
    rng = np.random.default_rng(1)
    images = [(rng.random((26, 21, 3)) * 255).astype(np.uint8), (rng.random((19, 30, 1)) * 255).astype(np.uint8)]
    return prepare_pairs(images, (2, 3), (1.0,), 7)


def crops(source, v, patch):
    """Every patch-sized (input, target) crop of variant v, unrotated."""
    o, h, w = int(source.offsets[v]), int(source.heights[v]), int(source.widths[v])
    inputs = source.inputs[o:o + h * w].reshape(h, w)
    targets = source.targets[o:o + h * w].reshape(h, w)
    for top in range(h - patch + 1):
        for left in range(w - patch + 1):
            yield inputs[top:top + patch, left:left + patch], targets[top:top + patch, left:left + patch]


def test_the_sampling_step_trains_on_the_sampler_s_patches_which_are_crops_of_the_pairs():
    source, batch, patch = pairs(), 4, 7
    mesh, state = fresh_state(1)
    data_key = jax.random.key(3)
    step = make_sampling_train_step(mesh, batch, patch, augment=False, loss_scale=0.5)
    device_source = jax.device_put(source, replicated(mesh))
    for t in range(2):  # the step's key is fold_in(data_key, step): step 1 draws other patches
        inputs, targets = sample_patches(device_source, jax.random.fold_in(data_key, t), jnp.arange(batch), patch,
                                         augment=False)
        inputs, targets = np.asarray(inputs), np.asarray(targets)
        for x, y in zip(inputs[..., 0], targets[..., 0]):  # each is an aligned crop of one variant
            assert any(np.array_equal(x, cx) and np.array_equal(y, cy)
                       for v in range(len(source.offsets)) for cx, cy in crops(source, v, patch))
        before = jax.tree.map(np.asarray, state.params)
        loss_value, expected = expected_step(before, inputs, targets, 0.5)
        state, loss = step(state, device_source, data_key)
        assert int(state.step) == t + 1
        assert float(loss) == pytest.approx(loss_value, rel=1e-5)
        for got, want, old in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected),
                                  jax.tree.leaves(before)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want - old).max())
