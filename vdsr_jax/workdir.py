"""A training workdir belongs to one run: one process writes it at a time (`vdsr_jax.ownership`; a
multi-process run's process 0 holds it for all, `vdsr_jax.training`), and only the same run resumes it.

The same run: a workdir with checkpoints is resumed only by a config of the same model and recipe
(`check_same_run`). The fields in RESUMABLE may change on resume: how long the run is, what and how often
it reports, evaluates and keeps, and where the same data lies. Every other field decides what the steps
compute (the model, the training data and its sampling, the loss, the optimiser and its schedule, the seed):
it is compared with the workdir's `config.json` (the config its last run resolved) and the model description
in its newest checkpoint. A new field is thus part of the recipe until it is listed here.
"""
import json
from pathlib import Path

from flax.traverse_util import flatten_dict

from vdsr_jax.checkpoint import saved_model_spec
from vdsr_jax.errors import ConfigError

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
RESUMABLE = ("num_epochs", "num_steps", "time_budget_minutes", "eval_sets", "eval_scales", "eval_every_steps",
             "checkpoint_every_steps", "keep_checkpoints", "log_every_steps", "comparison_images", "data_dir",
             "train_manual_dir", "data.workers", "data.host_budget_mib")
EXACT_MODE_RESUMABLE = ("data.device_budget_mib",)  # a limit in the exact mode; the pool's size in the pool mode
LISTED = 4  # differing fields named in the message; the rest are counted


def check_same_run(config, workdir) -> None:
    """ConfigError naming the fields that differ where `workdir` holds checkpoints of another model or recipe
    than `config` (as the run resolves it, `training.resolved`), before anything of it is loaded; nothing when
    it holds none. CheckpointError where the newest checkpoint's model description cannot be read,
    ConfigError where `config.json` cannot."""
    workdir = Path(workdir)
    saved = saved_model_spec(workdir / CHECKPOINTS)
    if saved is None:
        return
    step, spec = saved
    before = flatten_dict(_read_config(workdir / CONFIG_FILE), sep=".")
    before.update(flatten_dict({"model": spec}, sep="."))  # the checkpoint's own description decides
    now = flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
    resumable = RESUMABLE + (EXACT_MODE_RESUMABLE if now.get("data.mode") == "exact" else ())
    differ = [name for name in now if name in before and before[name] != now[name]
              and not any(name == field or name.startswith(field + ".") for field in resumable)]
    if not differ:
        return
    more = f" and {len(differ) - LISTED} more fields" if len(differ) > LISTED else ""
    listed = differ[:LISTED]
    raise ConfigError(
        f"workdir {workdir} holds a run with {_fields(before, listed)}{more} (checkpoint step {step}); this "
        f"config has {_fields(now, listed)}. A run resumes only with its own model and recipe (docs/training.md, "
        "\"Resuming\"); start a new run with another --workdir")


def _read_config(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read ({e}); it records the config of the run in that workdir, "
                          "whose checkpoints are kept: restore it, or start a new run with another --workdir") from None


def _fields(values: dict, names: list[str]) -> str:
    return ", ".join(f"{name}={json.dumps(values[name])}" for name in names)
