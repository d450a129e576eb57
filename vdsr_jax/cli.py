"""What the commands (`train`, `evaluate`, `upscale`, `convert`) share: one mapping from errors to exit
statuses, and quiet logging.

A `UserError` (`vdsr_jax.errors`) ends a command with one `error: …` line on stderr and exit status 1; an
OSError (a full disk, a permission) likewise; Ctrl-C with one line and status 130 (training: see
`vdsr_jax.preemption`, which saves first and exits 128 + the signal number). Anything else is a
programming error and keeps its traceback.
"""
import argparse
import functools
import logging
import os
import sys
import warnings

from vdsr_jax.errors import TrainingAbandoned, TrainingStopped, UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse would print the whole usage first), and the
    description (the command module's docstring) is shown as written."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def quiet_logging() -> None:
    """Keep stderr for errors and notes: orbax logs routine warnings through absl, TFDS and JAX log at INFO;
    libpng (through imagecodecs) and Pillow warn of damaged metadata that is then left out (a profile with a
    `note:`) or read as far as it goes (EXIF)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("jax").setLevel(logging.ERROR)
    logging.getLogger("tensorflow_datasets").setLevel(logging.ERROR)
    logging.getLogger("imagecodecs").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="orbax")
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL.TiffImagePlugin")  # EXIF is TIFF
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


def report_errors(main):
    """Decorate a command's `main(argv) -> int` with the exit-status mapping of the module docstring."""

    @functools.wraps(main)
    def wrapped(argv=None) -> int:
        quiet_logging()
        try:
            return main(argv)
        except TrainingStopped as e:  # a clean stop on SIGINT/SIGTERM: the message, no "error:"
            print(e, file=sys.stderr)
            if isinstance(e, TrainingAbandoned):
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(e.exit_status)
            return e.exit_status
        except (UserError, OSError) as e:
            message = e if isinstance(e, UserError) else f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")
            print("error: " + " ".join(str(message).split()), file=sys.stderr)  # one line, whatever it holds
            return 1
        except KeyboardInterrupt as e:  # a command may say where it stopped: KeyboardInterrupt("… at frame 57")
            print(f"error: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
            return 130

    return wrapped


CHECKPOINT_HELP = ("weights: a checkpoint folder (from vdsr-convert or vdsr-train) or training workdir, a .npz or "
                   ".safetensors file, or a torch file (needs torch); default: the weights bundled with the package")


def load_checkpoint(path):
    """`vdsr_jax.weight_forms.load_weights(path)` for a command's --checkpoint, its notes as `note:` lines."""
    from vdsr_jax.weight_forms import load_weights

    notes = []
    loaded = load_weights(path, notes=notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return loaded
