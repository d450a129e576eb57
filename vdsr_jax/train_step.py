"""The data-parallel SPMD train step: the pmap programming model written with `jax.shard_map`.

Each device holds a slice of the global batch along the mesh's `data` axis and the full (replicated)
parameters; the loss and its gradients are `psum`-med over that axis, so N devices apply exactly the update
one device would on the same global batch. Two entry points share that core: `make_train_step` takes an
explicit batch, `make_sampling_train_step` draws its patches on the device (see `vdsr_jax.data.patches`).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vdsr_jax.data.patches import PatchSource, sample_patches

DATA_AXIS = "data"
# On CPU, a device's slice larger than this is differentiated in unrolled chunks of this size and the
# gradients summed (exact for the summed loss up to float rounding): smaller per-layer working sets stay in
# cache, and XLA:CPU's fwd+bwd ran 1.3× faster at batch 16 (chunks of 8) and 1.5× at batch 64 (chunks of 16)
# (jax 0.12, 2-core Zen 4; docs/performance.md). A `lax.scan` over the chunks was far slower. Accelerators
# take the slice whole.
CPU_MICRO_BATCH = 8


class TrainState(train_state.TrainState):
    """Flax's TrainState; `step` counts optimiser updates."""


def create_train_state(model, optimizer: optax.GradientTransformation, rng: jax.Array,
                       channels: int = 1) -> TrainState:
    """Fresh float32 parameters of `model` (drawn from `rng`) and the optimiser's state, at step 0."""
    params = model.init(rng, jnp.zeros((1, 8, 8, channels), jnp.float32))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)


def summed_squared_error(params, apply_fn, inputs, targets) -> jax.Array:
    """pytorch-vdsr's `MSELoss(size_average=False)`: the squared error summed over batch and pixels."""
    predictions = apply_fn({"params": params}, inputs)
    return jnp.sum(jnp.square(predictions - targets.astype(jnp.float32)))


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (or `devices`) with the batch axis `data`."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices, (DATA_AXIS,))


def _global_loss_and_grads(apply_fn, params, inputs, targets):
    """Runs on one device's slice; the psum makes loss and gradients those of the global batch.

    The replicated parameters are cast to device-varying first, so `grad` yields this device's own
    gradients (differentiating w.r.t. the invariant value would already sum them over devices) and the
    one explicit psum is the all-reduce, as in the pmap model.
    """
    local_params = jax.lax.pcast(params, DATA_AXIS, to="varying")
    loss, grads = _loss_and_grads(local_params, apply_fn, inputs, targets)
    return jax.lax.psum((loss, grads), DATA_AXIS)


def _loss_and_grads(params, apply_fn, inputs, targets, micro_batch: int | None = None):
    """value_and_grad of the summed squared error; on CPU in unrolled chunks of `micro_batch`
    (default `CPU_MICRO_BATCH`) when the batch is larger and divisible by it, the chunks' results summed."""
    grad_fn = jax.value_and_grad(summed_squared_error)
    batch = inputs.shape[0]
    if micro_batch is None:
        micro_batch = CPU_MICRO_BATCH if jax.default_backend() == "cpu" else batch
    if batch <= micro_batch or batch % micro_batch:
        return grad_fn(params, apply_fn, inputs, targets)
    parts = [grad_fn(params, apply_fn, inputs[i:i + micro_batch], targets[i:i + micro_batch])
             for i in range(0, batch, micro_batch)]
    return jax.tree.map(lambda *leaves: sum(leaves[1:], leaves[0]), *parts)


def _apply_scaled_gradients(state: TrainState, loss, grads, loss_scale: float):
    grads = jax.tree.map(lambda g: g * loss_scale, grads)
    return state.apply_gradients(grads=grads), loss * loss_scale


def make_train_step(mesh: Mesh, loss_scale: float = 1.0):
    """Jitted `step(state, inputs, targets) -> (state, loss)`; the global batch is split over `mesh`.

    The loss is `loss_scale` × the summed squared error of the whole batch, before the update (1.0 is
    pytorch-vdsr's loss; the paper's ½·mean over the batch is 0.5 / batch_size).
    """

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state: TrainState, inputs: jax.Array, targets: jax.Array):
        loss, grads = jax.shard_map(
            functools.partial(_global_loss_and_grads, state.apply_fn),
            mesh=mesh,
            in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
            out_specs=(P(), P()),
        )(state.params, inputs, targets)
        return _apply_scaled_gradients(state, loss, grads, loss_scale)

    return step


def make_sampling_train_step(mesh: Mesh, batch_size: int, patch_size: int, augment: bool = True,
                             loss_scale: float = 1.0):
    """Jitted `step(state, source, data_key) -> (state, loss)` drawing its batch on the devices.

    Device d samples global patches d·b … (d+1)·b − 1 (b = batch_size / devices) of the step's key
    `fold_in(data_key, state.step)`, so the batch is the same for any device count and after a resume.
    """
    local_batch = batch_size // mesh.size

    def local(apply_fn, params, source, step_key):
        first = jax.lax.axis_index(DATA_AXIS) * local_batch
        inputs, targets = sample_patches(source, step_key, first + jnp.arange(local_batch), patch_size, augment)
        return _global_loss_and_grads(apply_fn, params, inputs, targets)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state: TrainState, source: PatchSource, data_key: jax.Array):
        step_key = jax.random.fold_in(data_key, state.step)
        loss, grads = jax.shard_map(
            functools.partial(local, state.apply_fn),
            mesh=mesh,
            in_specs=(P(), P(), P()),
            out_specs=(P(), P()),
        )(state.params, source, step_key)
        return _apply_scaled_gradients(state, loss, grads, loss_scale)

    return step


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
