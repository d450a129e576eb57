"""The data-parallel SPMD train step: the pmap programming model written with `jax.shard_map`.

Each device holds a slice of the global batch along the mesh's `data` axis and the full (replicated)
parameters; the summed loss and its gradients are `psum`-med over that axis, so N devices apply exactly the
update one device would on the same global batch.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


class TrainState(train_state.TrainState):
    """Flax's TrainState; `step` counts optimiser updates."""


def create_train_state(model, optimizer: optax.GradientTransformation, rng: jax.Array,
                       channels: int = 1) -> TrainState:
    params = model.init(rng, jnp.zeros((1, 8, 8, channels), jnp.float32))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)


def summed_squared_error(params, apply_fn, inputs, targets) -> jax.Array:
    """pytorch-vdsr's `MSELoss(size_average=False)`: the squared error summed over batch and pixels."""
    predictions = apply_fn({"params": params}, inputs)
    return jnp.sum(jnp.square(predictions - targets.astype(jnp.float32)))


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all local devices (or `devices`) with the batch axis `data`."""
    devices = np.asarray(jax.local_devices() if devices is None else devices)
    return Mesh(devices, (DATA_AXIS,))


def make_train_step(mesh: Mesh):
    """A jitted `step(state, inputs, targets) -> (state, loss)` sharding the batch over `mesh`.

    `inputs`/`targets` are global NHWC batches whose size divides by the mesh size; `loss` is the summed
    squared error of the whole global batch, before the update.
    """

    def local_grads(apply_fn, params, inputs, targets):
        loss, grads = jax.value_and_grad(summed_squared_error)(params, apply_fn, inputs, targets)
        return jax.lax.psum((loss, grads), DATA_AXIS)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state: TrainState, inputs: jax.Array, targets: jax.Array):
        sharded_grads = jax.shard_map(
            functools.partial(local_grads, state.apply_fn),
            mesh=mesh,
            in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
            out_specs=(P(), P()),
        )
        loss, grads = sharded_grads(state.params, inputs, targets)
        return state.apply_gradients(grads=grads), loss

    return step


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
