"""Model checkpoints: one orbax layout for what `convert` and `train` write and what everything loads.

A checkpoint directory is an orbax `CheckpointManager` root whose step folders hold at least two items:
`params` (the Flax parameter tree) and `model` (JSON: the `VDSR` hyper-parameters). Training adds its own
items (optimiser and data state) beside them; loading a model reads only these two.
"""
import errno
import os
import secrets
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
from flax.traverse_util import flatten_dict

from vdsr_jax.errors import CheckpointError, OutputExists
from vdsr_jax.media import refuse_existing
from vdsr_jax.model import VDSR, create_model, model_spec
from vdsr_jax.ownership import LOCK_FILE, hold

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
    if not np.all(np.isfinite(array)):  # (numpy's isfinite takes ml_dtypes' types too)
        raise CheckpointError(f"layer {name} holds non-finite values")
    single = array.astype(np.float32)
    if not np.all(np.isfinite(single)):
        raise CheckpointError(f"layer {name} holds values beyond float32's range")
    if array.dtype.itemsize <= 4 or np.array_equal(single.astype(array.dtype), array):
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
    exists and is not empty (a checkpoint or anything else) and not `overwrite`, also where another process
    made it meanwhile (the rename fails on a folder that is not empty), and with `overwrite` where it is a
    file or a folder of anything but checkpoints (`check_replaceable`); with `overwrite` the old folder is
    replaced once the new one is complete, holding it (`vdsr_jax.ownership`: OutputInUse where a training
    run is writing it). CheckpointError if `params` do not fit `model`.
    """
    validate_params(params, model)
    path = Path(directory).expanduser().absolute()
    refuse_existing(path, overwrite)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
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
        if overwrite and path.exists():
            with hold(path):  # a training run's workdir is replaced only when no run is writing it
                retired = path.with_name(f"{staging.name[:-len('.partial')]}.old")
                path.rename(retired)
                staging.rename(path)
                shutil.rmtree(retired)
        else:
            _rename_to_new(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


# What a training run writes in its workdir (training.py, metric_writer.py, budget.py, ownership.py); a test
# checks a real workdir against it. A folder holding anything else is never replaced.
WORKDIR_ENTRIES = frozenset({"checkpoints", "config.json", "plan.json", "metrics.jsonl", "training.png",
                             "tensorboard", "images", LOCK_FILE})


def _contents(path: Path) -> tuple[list[str], bool]:
    """(the entries of the folder `path` that no checkpoint folder or training workdir holds, whether it holds
    a checkpoint step). Ours: step folders (and orbax's `<step>.orbax-checkpoint-tmp-…`), the run lock, and a
    workdir's files beside its `checkpoints/`."""
    workdir = (path / "checkpoints").is_dir()
    root = path / "checkpoints" if workdir else path
    foreign = [entry.name for entry in path.iterdir() if entry.name not in WORKDIR_ENTRIES] if workdir else []
    has_step = False
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.split(".")[0].isdigit():
            has_step = has_step or (entry / MODEL).is_dir()
        elif entry.name != LOCK_FILE:
            foreign.append(str(entry.relative_to(path)))
    return sorted(foreign), has_step


def check_replaceable(path) -> None:
    """OutputInUse where a run holds the folder `path` (`vdsr_jax.ownership`); OutputExists unless `path` is
    free, an empty folder, or a checkpoint folder or training workdir that holds nothing else: what
    `--overwrite` may replace. A file, or a folder holding anything else (which the replacement would
    delete), never is."""
    path = Path(path).expanduser()
    if (path / LOCK_FILE).is_file():
        with hold(path):  # a run writing there is named first: that is what to wait for
            pass
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if not path.is_dir():
        reason = "is a file"
    else:
        foreign, has_step = _contents(path)
        if foreign:
            reason = f"holds {', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''}, which no checkpoint holds"
        elif not has_step:
            reason = "is a folder that holds no vdsr_jax checkpoint"
        else:
            return
    raise OutputExists(f"{path} {reason}: --overwrite replaces only a checkpoint folder or a training workdir "
                       "(replacing this would delete it); give another output")


def _rename_to_new(staging: Path, path: Path) -> None:
    """Rename the folder `staging` to `path`, which may be missing or an empty folder; OutputExists where it
    is anything else (rename(2) replaces only an empty folder)."""
    try:
        staging.rename(path)
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise
        raise OutputExists(f"{path} already exists (written meanwhile by another process); pass --overwrite to "
                           "replace it") from None


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


def restore_training(manager: ocp.CheckpointManager, state, data_key):
    """(state, data_key) of the newest step, or the inputs when there is none.

    CheckpointError where that step cannot be read (damaged or truncated files, or not a training checkpoint
    of this state's structure): an older step is not taken instead, since the run would then reach the
    damaged step's number again and orbax cannot write a step that exists; nothing is changed.
    """
    step = manager.latest_step()
    if step is None:
        return state, data_key
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            {PARAMS: state.params, TRAIN: _train_item(state, data_key)})
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**{
            PARAMS: ocp.args.StandardRestore(abstract[PARAMS]),
            TRAIN: ocp.args.StandardRestore(abstract[TRAIN]),
        }))
    except Exception as e:  # orbax raises many types for unreadable data; one message for all
        earlier = [s for s in manager.all_steps() if s < step]
        resume = (f"move {Path(manager.directory) / str(step)} elsewhere to resume from step {max(earlier)}, or "
                  if earlier else "")
        raise CheckpointError(
            f"checkpoint step {step} in {manager.directory} cannot be read ({type(e).__name__}: {str(e)[:200]}); "
            f"nothing was changed: {resume}start a new run with another --workdir") from None
    train = restored[TRAIN]
    state = state.replace(step=train["step"], params=restored[PARAMS], opt_state=train["opt_state"])
    return state, jax.random.wrap_key_data(train["data_key"])


def saved_model_spec(directory) -> tuple[int, dict] | None:
    """(the newest step, its `model` item: the VDSR description) of the checkpoint manager root `directory`;
    None where it holds no step. Reads that JSON item only. CheckpointError where it cannot be read."""
    path = Path(directory).expanduser().absolute()
    if not path.is_dir():
        return None
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(path, options=options, item_handlers={MODEL: ocp.JsonCheckpointHandler()}) as manager:
        step = manager.latest_step()
        if step is None:
            return None
        try:
            spec = manager.restore(step, args=ocp.args.Composite(**{MODEL: ocp.args.JsonRestore()}))[MODEL]
        except Exception as e:  # as in load_model
            raise CheckpointError(f"cannot read the model description of checkpoint step {step} in {path}: "
                                  f"{type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(spec, dict):
        raise CheckpointError(f"the model description of checkpoint step {step} in {path} is not a JSON object")
    return step, spec
