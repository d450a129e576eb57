"""Model checkpoints: one orbax layout for what `convert` and `train` write and what everything loads.

A checkpoint directory is an orbax `CheckpointManager` root whose step folders hold at least two items:
`params` (the Flax parameter tree) and `model` (JSON: the `VDSR` hyper-parameters). Training adds its own
items (optimiser and data state) beside them; loading a model reads only these two.
"""
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
from flax.traverse_util import flatten_dict

from vdsr_jax.errors import CheckpointError
from vdsr_jax.media import refuse_existing
from vdsr_jax.model import VDSR, create_model, model_spec

PARAMS = "params"
MODEL = "model"


def model_from_spec(spec: dict, compute_dtype: str = "float32") -> VDSR:
    """The VDSR a checkpoint's `model` item describes; CheckpointError if it is not a valid description."""
    try:
        return create_model({**spec, "compute_dtype": compute_dtype})
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"the checkpoint's model description is invalid: {e}") from None


def expected_shapes(model: VDSR, channels: int = 1) -> dict:
    """Parameter shapes of `model`, computed without allocating them."""
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 3, channels)))
    return jax.tree.map(lambda a: a.shape, abstract[PARAMS])


def validate_params(params: dict, model: VDSR) -> None:
    """Raise CheckpointError naming the first layer that is missing, extra or of the wrong shape."""
    expected = flatten_dict(expected_shapes(model), sep="/")
    try:
        found = {name: np.shape(value) for name, value in flatten_dict(params, sep="/").items()}
    except AttributeError:
        raise CheckpointError(f"parameters are not a tree of layers (got {type(params).__name__})") from None
    for name, shape in expected.items():
        if name not in found:
            raise CheckpointError(f"layer {name} is missing (expected shape {shape})")
        if found[name] != shape:
            raise CheckpointError(f"layer {name} has shape {found[name]}, expected {shape}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise CheckpointError(f"unexpected layer {extra[0]} for a VDSR of {model_spec(model)}")


def is_float_dtype(dtype) -> bool:
    """numpy's floating types and ml_dtypes' (bfloat16, float8_*), which numpy stores as kind 'V'."""
    dtype = np.dtype(dtype)
    if dtype.kind == "V":
        try:
            ml_dtypes.finfo(dtype)
        except ValueError:
            return False
        return True
    return dtype.kind == "f"


def float32_weights(name: str, array) -> tuple[np.ndarray, float | None]:
    """float32 values of the floating-point weights `array` (any numpy or ml_dtypes float type), and the
    largest change relative to its largest magnitude where that rounding is not exact (None where it is:
    float16, bfloat16, float8 and float32 always are). CheckpointError naming layer `name` for other dtypes
    and non-finite values."""
    array = np.asarray(array)
    if not is_float_dtype(array.dtype):
        raise CheckpointError(f"layer {name} holds {array.dtype} values; VDSR weights are floating point")
    single = array.astype(np.float32)
    if array.dtype.itemsize <= 4:
        if not np.all(np.isfinite(single)):
            raise CheckpointError(f"layer {name} holds non-finite values")
        return single, None
    if not np.all(np.isfinite(array)):
        raise CheckpointError(f"layer {name} holds non-finite values")
    if not np.all(np.isfinite(single)):
        raise CheckpointError(f"layer {name} holds values beyond float32's range")
    if np.array_equal(single.astype(array.dtype), array):
        return single, None
    return single, float(np.max(np.abs(single - array)) / max(float(np.max(np.abs(array))), 1e-300))


def resolve(directory) -> Path:
    """The checkpoint manager root of `directory`: itself, or a training workdir's `checkpoints/`.

    CheckpointError for a missing path or a file (`vdsr_jax.weight_forms` reads files)."""
    path = Path(directory).expanduser()
    if path.is_file():
        raise CheckpointError(f"{path} is a file, not a checkpoint folder (vdsr_jax.weight_forms.load_weights "
                              "reads weights files)")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    return path


def save_model(directory, params: dict, model: VDSR, step: int = 0, overwrite: bool = False) -> Path:
    """Write `params` and the model description as step `step` of a new checkpoint folder `directory`.

    The folder is written beside its final name and renamed when complete. OutputExists if `directory`
    exists and is not empty (a checkpoint or anything else) and not `overwrite`; with `overwrite` the old
    folder is replaced only once the new one is complete. CheckpointError if `params` do not fit `model`.
    """
    validate_params(params, model)
    path = Path(directory).expanduser().absolute()
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
        with ocp.CheckpointManager(staging, options=options) as manager:
            manager.save(
                step,
                args=ocp.args.Composite(
                    **{PARAMS: ocp.args.StandardSave(params), MODEL: ocp.args.JsonSave(model_spec(model))}
                ),
                force=True,
            )
        if path.exists():
            retired = path.with_name(f".{path.name}.{os.getpid()}.old")
            path.rename(retired)
            staging.rename(path)
            shutil.rmtree(retired)
        else:
            staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def on_first_local_device(metadata: dict) -> dict:
    """Abstract arrays of the saved shapes on this process's first device: a checkpoint written over other
    devices (a TPU's 8 cores, several hosts) cannot be restored onto the shardings it records."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), metadata)


def load_model(directory, step: int | None = None, compute_dtype: str = "float32") -> tuple[VDSR, dict]:
    """The model and float32 parameters of step `step` (default: the latest) of the checkpoint at
    `directory` (see `resolve`). CheckpointError for anything missing, unreadable or inconsistent."""
    path = resolve(directory)
    options = ocp.CheckpointManagerOptions(read_only=True)
    handlers = {PARAMS: ocp.StandardCheckpointHandler(), MODEL: ocp.JsonCheckpointHandler(),
                TRAIN: ocp.StandardCheckpointHandler()}  # all items, so that item_metadata warns of none
    with ocp.CheckpointManager(path.absolute(), options=options, item_handlers=handlers) as manager:
        steps = manager.all_steps()
        if not steps:
            raise CheckpointError(f"{path} holds no vdsr_jax checkpoint (no step folders)")
        step = max(steps) if step is None else step
        if step not in steps:
            raise CheckpointError(f"{path} has no step {step} (steps: {sorted(steps)})")
        try:
            target = on_first_local_device(manager.item_metadata(step)[PARAMS].tree)
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    **{MODEL: ocp.args.JsonRestore(), PARAMS: ocp.args.StandardRestore(target)}
                ),
            )
        except Exception as e:  # orbax raises many types for unreadable data; one message for all
            raise CheckpointError(f"cannot read checkpoint step {step} in {path}: {e}") from None
    model = model_from_spec(restored[MODEL], compute_dtype)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), restored[PARAMS])
    validate_params(params, model)
    return model, params


# Training checkpoints: the model items above plus `train` (step, optimiser state, data PRNG key).
TRAIN = "train"
BEST_METRIC = "psnr"


def training_manager(directory, keep_last: int) -> ocp.CheckpointManager:
    """Keeps the `keep_last` latest steps and the one with the best eval PSNR (`metrics['psnr']`)."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(keep_last),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).expanduser().absolute(), options=options)


def _train_item(state, data_key) -> dict:
    return {"step": state.step, "opt_state": state.opt_state, "data_key": jax.random.key_data(data_key)}


def save_training(manager: ocp.CheckpointManager, state, model: VDSR, data_key, metrics: dict | None = None):
    """Save `state` (a flax TrainState) as step `state.step`; atomic, so a kill leaves the previous one."""
    manager.save(
        int(state.step),
        args=ocp.args.Composite(**{
            PARAMS: ocp.args.StandardSave(state.params),
            MODEL: ocp.args.JsonSave(model_spec(model)),
            TRAIN: ocp.args.StandardSave(_train_item(state, data_key)),
        }),
        metrics=metrics,
        force=True,
    )
    manager.wait_until_finished()


def restore_training(manager: ocp.CheckpointManager, state, data_key, warn=print):
    """(state, data_key) of the newest readable step, or the inputs when there is none.

    A step that cannot be read (corrupt or truncated files) is reported through `warn` and the one
    before it is tried.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            {PARAMS: state.params, TRAIN: _train_item(state, data_key)})
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(step, args=ocp.args.Composite(**{
                PARAMS: ocp.args.StandardRestore(abstract[PARAMS]),
                TRAIN: ocp.args.StandardRestore(abstract[TRAIN]),
            }))
        except Exception as e:  # any unreadable step: fall back to the previous one
            warn(f"warning: checkpoint step {step} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                 "trying the previous one")
            continue
        train = restored[TRAIN]
        state = state.replace(step=train["step"], params=restored[PARAMS], opt_state=train["opt_state"])
        return state, jax.random.wrap_key_data(train["data_key"])
    return state, data_key
