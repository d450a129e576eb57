"""Model checkpoints: one orbax layout for what `convert` and `train` write and what everything loads.

A checkpoint directory is an orbax `CheckpointManager` root whose step folders hold at least two items:
`params` (the Flax parameter tree) and `model` (JSON: the `VDSR` hyper-parameters). Training adds its own
items (optimiser and data state) beside them; loading a model reads only these two.
"""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vdsr_jax.model import VDSR

PARAMS = "params"
MODEL = "model"
SPEC_FIELDS = ("depth", "features", "use_bias")


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or does not fit the model; the message says which."""


def model_spec(model: VDSR) -> dict:
    return {field: getattr(model, field) for field in SPEC_FIELDS}


def model_from_spec(spec: dict, dtype=jnp.float32) -> VDSR:
    try:
        depth, features, use_bias = (spec[f] for f in SPEC_FIELDS)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"model description {spec!r} lacks {e}") from None
    if not (isinstance(depth, int) and depth >= 2 and isinstance(features, int) and features >= 1):
        raise CheckpointError(f"model description {spec!r} is not a valid VDSR")
    return VDSR(depth=depth, features=features, use_bias=bool(use_bias), dtype=dtype)


def expected_shapes(model: VDSR, channels: int = 1) -> dict:
    """Parameter shapes of `model`, computed without allocating them."""
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 3, channels)))
    return jax.tree.map(lambda a: a.shape, abstract[PARAMS])


def validate_params(params: dict, model: VDSR) -> None:
    """Raise CheckpointError naming the first layer that is missing, extra or of the wrong shape."""
    expected = flatten(expected_shapes(model))
    found = {name: np.shape(value) for name, value in flatten(params).items()}
    for name, shape in expected.items():
        if name not in found:
            raise CheckpointError(f"layer {name} is missing (expected shape {shape})")
        if found[name] != shape:
            raise CheckpointError(f"layer {name} has shape {found[name]}, expected {shape}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise CheckpointError(f"unexpected layer {extra[0]} for a VDSR of {model_spec(model)}")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'conv_0': {'kernel': a}} -> {'conv_0/kernel': a}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def resolve(directory) -> Path:
    """Accept a manager root or a training workdir (which keeps its manager in `checkpoints/`)."""
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    return path


def save_model(directory, params: dict, model: VDSR, step: int = 0) -> Path:
    """Write `params` and the model description as step `step` of a checkpoint at `directory`."""
    validate_params(params, model)
    path = Path(directory).expanduser().absolute()
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
    with ocp.CheckpointManager(path, options=options) as manager:
        manager.save(
            step,
            args=ocp.args.Composite(
                **{PARAMS: ocp.args.StandardSave(params), MODEL: ocp.args.JsonSave(model_spec(model))}
            ),
            force=True,
        )
    return path


def load_model(directory, step: int | None = None, dtype=jnp.float32) -> tuple[VDSR, dict]:
    """The model and float32 parameters of step `step` (default: the latest) of the checkpoint."""
    path = resolve(directory)
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(path.absolute(), options=options) as manager:
        steps = manager.all_steps()
        if not steps:
            raise CheckpointError(f"{path} holds no checkpoint (no step folders)")
        step = max(steps) if step is None else step
        if step not in steps:
            raise CheckpointError(f"{path} has no step {step} (steps: {sorted(steps)})")
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    **{MODEL: ocp.args.JsonRestore(), PARAMS: ocp.args.StandardRestore()}
                ),
            )
        except Exception as e:  # orbax raises many types for unreadable data; one message for all
            raise CheckpointError(f"cannot read checkpoint step {step} in {path}: {e}") from None
    model = model_from_spec(restored[MODEL], dtype=dtype)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), restored[PARAMS])
    validate_params(params, model)
    return model, params
