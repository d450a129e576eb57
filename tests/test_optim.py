"""The optimiser (vdsr_jax.optim): the step schedule, each clipping alone against numpy, the decay period as
a value of the state. The whole chain (clip, weight decay, momentum) against numpy is in test_parity."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vdsr_jax import configs
from vdsr_jax.errors import ConfigError
from vdsr_jax.optim import StepDecayState, learning_rate, make_optimizer, with_decay_every


def config(**optimizer):
    """A config whose optimiser is plain SGD (no momentum, no decay) unless `optimizer` says otherwise, so
    that an update is −lr × the clipped gradient."""
    defaults = dict(learning_rate=0.1, decay_factor=0.1, decay_every_epochs=1, clipping="global_norm",
                    clip_norm=0.4, clip_theta=0.01, weight_decay=0.0, momentum=0.0)
    return ml_collections.ConfigDict({"optimizer": {**defaults, **optimizer}})


def gradients(rng, scale):
    return {"a": (scale * rng.standard_normal((3, 4))).astype(np.float32),
            "b": (scale * rng.standard_normal(5)).astype(np.float32)}


def test_learning_rate_drops_by_the_factor_after_each_full_period():
    # pytorch-vdsr's adjust_learning_rate: lr = base · 0.1^(epoch // step), written out
    expected = [0.1] * 3 + [0.01] * 3 + [0.001] * 3 + [0.0001]
    np.testing.assert_allclose([learning_rate(c, 0.1, 3) for c in range(10)], expected, rtol=1e-12)
    assert learning_rate(7, 0.2, 3, decay_factor=0.5) == pytest.approx(0.05)
    traced = learning_rate(jnp.arange(10, dtype=jnp.int32), 0.1, jnp.int32(3))
    assert traced.dtype == jnp.float32
    np.testing.assert_allclose(traced, expected, rtol=1e-6)


@pytest.mark.parametrize("scale, clipped", [(2.0, True), (0.01, False)])
def test_global_norm_clipping_scales_the_whole_gradient_to_the_norm(scale, clipped):
    """g · min(1, c / ‖g‖) with ‖g‖ over all leaves together (numpy), as optax.clip_by_global_norm does."""
    grads = gradients(np.random.default_rng(0), scale)
    tx = make_optimizer(config(clip_norm=0.4), steps_per_epoch=100)
    updates, _ = tx.update(grads, tx.init(grads), grads)
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    assert (norm > 0.4) == clipped
    reference, _ = optax.clip_by_global_norm(0.4).update(grads, optax.EmptyState())
    for k, g in grads.items():
        expected = -0.1 * g * min(1.0, 0.4 / norm)
        np.testing.assert_allclose(updates[k], expected, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(updates[k], -0.1 * np.asarray(reference[k]), rtol=1e-6)


def test_adjustable_clipping_bounds_each_element_by_theta_over_the_current_lr():
    """The paper's clipping: each element into [−θ/γ, θ/γ]. The bound grows ×10 when the lr drops ÷10, so
    the update −γ·clip(g) never exceeds θ in any element."""
    theta = 0.01
    tx = make_optimizer(config(clipping="adjustable", clip_theta=theta), steps_per_epoch=2)
    rng = np.random.default_rng(1)
    params = gradients(rng, 1.0)
    state = tx.init(params)
    for step in range(4):
        grads = gradients(rng, 1.0)
        updates, state = tx.update(grads, state, params)
        lr = 0.1 * 0.1 ** (step // 2)
        bound = theta / lr  # 0.1, then 1.0
        for k, g in grads.items():
            np.testing.assert_allclose(updates[k], -lr * np.clip(g, -bound, bound), rtol=1e-6, atol=1e-9)
            assert np.abs(updates[k]).max() <= theta * (1 + 1e-6)
        assert 0 < np.mean(np.abs(grads["a"]) > bound) < 1  # the bound clips some elements, not all


def test_an_unknown_clipping_is_refused_when_the_optimizer_is_made():
    with pytest.raises(ConfigError, match="optimizer.clipping must be 'global_norm' or 'adjustable', not 'none'"):
        make_optimizer(config(clipping="none"), steps_per_epoch=10)


def test_the_decay_period_is_a_value_of_the_state_set_without_recompiling():
    """init holds steps_per_epoch · decay_every_epochs; `with_decay_every` replaces only that value, keeps
    its placement, and the jitted update takes the new state without tracing again."""
    tx = make_optimizer(config(decay_every_epochs=3, clip_norm=1e9), steps_per_epoch=7)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    assert isinstance(state, StepDecayState)
    assert int(state.decay_every) == 21 and state.decay_every.dtype == jnp.int32 and int(state.count) == 0
    traces = []

    @jax.jit
    def update(grads, state):
        traces.append(1)  # runs once per trace
        return tx.update(grads, state, params)

    grads = {"w": jnp.ones(2)}
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)),
                                          jax.sharding.PartitionSpec())
    _, state = update(grads, jax.device_put(state, sharding))
    changed = with_decay_every(state, 1)
    assert int(changed.decay_every) == 1 and changed.decay_every.sharding == state.decay_every.sharding
    assert int(changed.count) == 1 and changed.inner is state.inner
    updates, changed = update(grads, changed)
    np.testing.assert_allclose(updates["w"], -0.01, rtol=1e-6)  # count 1 ≥ one period of 1: lr 0.1 · 0.1
    assert int(changed.count) == 2 and len(traces) == 1


@pytest.mark.parametrize("name", configs.NAMES)
def test_every_installed_config_makes_an_optimizer(name):
    config = importlib.import_module(f"vdsr_jax.configs.{name}").get_config()
    tx = make_optimizer(config, steps_per_epoch=3)
    state = tx.init({"w": jnp.zeros(2)})
    assert int(state.decay_every) == 3 * config.optimizer.decay_every_epochs > 0
