"""Errors a user can cause and fix: every command prints one as a single `error:` line and exits 1.

Anything else that is raised is a programming error and keeps its traceback (see `vdsr_jax.cli`).
"""
import difflib


class UserError(Exception):
    """Base of the problems a user can fix (bad argument, file, folder, config); the message says which."""


class ImageError(UserError):
    """An image file that cannot be read or written as asked (missing, damaged, unsupported, too large)."""


class DataError(UserError):
    """A dataset folder that is missing, empty, or does not hold what its builder expects."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class ConversionError(UserError):
    """A torch file that is unsafe, unreadable or not a VDSR."""


class ConfigError(UserError):
    """A config value that cannot work; raised before anything is loaded or compiled."""


class TrainingDiverged(UserError):
    """The training loss stopped being finite."""


class TrainingStopped(UserError):
    """A run stopped on request (SIGINT/SIGTERM) after saving a checkpoint: not a failure, but the command
    exits with 128 + the signal number, as a shell reports a process the signal ended."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


class TrainingAbandoned(TrainingStopped):
    """A run stopped on request while the devices still run a step whose results did not come (a collective
    waiting for a peer): nothing is saved, and the process must exit at once (`os._exit`), since Python's own
    shutdown would wait for that step."""


class DistributedError(UserError):
    """Multi-process settings that cannot work; the message names the flag and the variable."""


class OutputExists(UserError):
    """An output path that already holds a result, written again without `--overwrite`."""


class OutputInUse(UserError):
    """An output folder another process is writing now: a training workdir held by its run (`vdsr_jax.ownership`)."""


class MissingDependency(UserError):
    """An optional package that the requested feature needs is not installed; the message says how to install it."""


def known_names(name: str, known) -> str:
    """The tail of a message about an unknown `name`: the closest of `known` (`difflib.get_close_matches`),
    else all of them, e.g. "did you mean 'set5'? (known: set5, set14)"."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3)
    listed = f"known: {', '.join(known)}"
    return f"did you mean {' or '.join(map(repr, close))}? ({listed})" if close else listed


def check_integer(field: str, value, minimum: int = 1) -> None:
    """ConfigError `config.<field> must be an integer ≥ <minimum>` unless `value` is such an int (a bool is not)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"config.{field} must be an integer ≥ {minimum}, not {value!r}")
