"""The optimiser: gradient clipping, weight decay and momentum SGD on a step schedule.

pytorch-vdsr clips the global norm to 0.4 before `SGD(momentum, weight_decay)`, whose decay is added after
clipping; the paper clips each gradient element to [-θ/γ, θ/γ] for the current learning rate γ
("adjustable gradient clipping"). Both are an optax chain.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(base_lr: float, steps_per_epoch: int, decay_every_epochs: int,
                           decay_factor: float = 0.1) -> optax.Schedule:
    """lr = base · factor^(epoch // decay_every_epochs), as pytorch-vdsr's `adjust_learning_rate`."""
    return optax.exponential_decay(base_lr, transition_steps=steps_per_epoch * decay_every_epochs,
                                   decay_rate=decay_factor, staircase=True)


class ScheduleCount(NamedTuple):
    count: jax.Array


def clip_by_learning_rate(theta: float, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The paper's adjustable clipping: each element into [-θ/γ, θ/γ], γ the step's learning rate."""

    def init(params):
        del params
        return ScheduleCount(jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        bound = theta / schedule(state.count)
        updates = jax.tree.map(lambda g: jnp.clip(g, -bound, bound), updates)
        return updates, ScheduleCount(optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """From `config.optimizer`: clipping ('global_norm' or 'adjustable'), weight decay, momentum SGD."""
    opt = config.optimizer
    schedule = learning_rate_schedule(opt.learning_rate, steps_per_epoch, opt.decay_every_epochs,
                                      opt.decay_factor)
    if opt.clipping == "global_norm":
        clip = optax.clip_by_global_norm(opt.clip_norm)
    elif opt.clipping == "adjustable":
        clip = clip_by_learning_rate(opt.clip_theta, schedule)
    else:
        raise ValueError(f"optimizer.clipping must be 'global_norm' or 'adjustable', not {opt.clipping!r}")
    return optax.chain(clip, optax.add_decayed_weights(opt.weight_decay),
                       optax.sgd(schedule, momentum=opt.momentum))
