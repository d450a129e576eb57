"""The optimiser: gradient clipping, weight decay and momentum SGD on a step schedule.

pytorch-vdsr clips the global norm to 0.4 before `SGD(momentum, weight_decay)`, whose decay is added after
clipping; the paper clips each gradient element to [-θ/γ, θ/γ] for the current learning rate γ
("adjustable gradient clipping"). Both are an optax chain, run at the step's learning rate.

The learning rate is base · factor^(count // decay_every). `decay_every` (steps between drops) is a value in
the optimiser's state, not a constant of the compiled step, so a run whose length is planned after compiling
(`config.time_budget_minutes`) sets it with `with_decay_every` without recompiling, and it is checkpointed
with the rest of the state.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from vdsr_jax.errors import ConfigError


def learning_rate(count, base_lr: float, decay_every, decay_factor: float = 0.1):
    """lr of update `count` (0-based): base · factor^(count // decay_every), as pytorch-vdsr's
    `adjust_learning_rate` with decay_every = steps_per_epoch · decay_every_epochs. Python ints give a float;
    int32 arrays (in the step) a float32 array."""
    return base_lr * decay_factor ** (count // decay_every)


class StepDecayState(NamedTuple):
    count: jax.Array  # int32: updates applied so far
    decay_every: jax.Array  # int32: steps between learning-rate drops
    inner: optax.OptState  # the clip / weight-decay / momentum chain's state


def _clip_elements(bound) -> optax.GradientTransformation:
    return optax.stateless(lambda updates, params: jax.tree.map(lambda g: jnp.clip(g, -bound, bound), updates))


# config.optimizer.clipping -> the clipping at learning rate `lr`
CLIPPING = {
    "global_norm": lambda opt, lr: optax.clip_by_global_norm(opt.clip_norm),
    "adjustable": lambda opt, lr: _clip_elements(opt.clip_theta / lr),  # the paper: each element in [-θ/γ, θ/γ]
}


def check_config(config) -> None:
    """ConfigError naming the first field of `config.optimizer` that cannot work: a clipping not in
    `CLIPPING`, or a learning rate, clip bound or decay factor that is not > 0."""
    opt = config.optimizer
    if opt.clipping not in CLIPPING:
        raise ConfigError(f"config.optimizer.clipping must be 'global_norm' or 'adjustable', not {opt.clipping!r}")
    for name in ("learning_rate", "clip_norm", "clip_theta", "decay_factor"):
        if not getattr(opt, name) > 0:
            raise ConfigError(f"config.optimizer.{name} must be > 0, not {getattr(opt, name)!r}")


def _chain(opt, lr) -> optax.GradientTransformation:
    """clip, weight decay, momentum SGD at learning rate `lr` (a float, or a traced scalar in `update`)."""
    return optax.chain(CLIPPING[opt.clipping](opt, lr), optax.add_decayed_weights(opt.weight_decay),
                       optax.sgd(lr, momentum=opt.momentum))


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """From `config.optimizer`: clipping ('global_norm' or 'adjustable'), weight decay, momentum SGD, the
    learning rate dropping by `decay_factor` every `steps_per_epoch · decay_every_epochs` steps (until
    `with_decay_every` changes that). ConfigError for a field `check_config` refuses."""
    check_config(config)
    opt = config.optimizer
    decay_every = steps_per_epoch * opt.decay_every_epochs

    def init(params):
        # the chain's state does not depend on the lr
        return StepDecayState(jnp.zeros([], jnp.int32), jnp.asarray(decay_every, jnp.int32),
                              _chain(opt, opt.learning_rate).init(params))

    def update(updates, state, params=None):
        lr = learning_rate(state.count, opt.learning_rate, state.decay_every, opt.decay_factor)
        updates, inner = _chain(opt, lr).update(updates, state.inner, params)
        return updates, StepDecayState(optax.safe_increment(state.count), state.decay_every, inner)

    return optax.GradientTransformation(init, update)


def with_decay_every(opt_state: StepDecayState, steps: int) -> StepDecayState:
    """`opt_state` (of `make_optimizer`) with the learning rate dropping every `steps` steps, placed like the
    old value (same sharding), so the compiled step takes it as it is."""
    value = jnp.asarray(steps, jnp.int32)
    sharding = getattr(opt_state.decay_every, "sharding", None)
    return opt_state._replace(decay_every=jax.device_put(value, sharding) if sharding is not None else value)
