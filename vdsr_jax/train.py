"""Train VDSR data-parallel over all devices.

    vdsr-train --config x234 --workdir runs/x234 [--config.num_epochs=1 …]
    (or: python -m vdsr_jax.train --config configs/x234.py …)

`--config` takes an installed config name (x234, x234_long, x2, x3, x4, pytorch_vdsr, demo, div2k; default demo) or the path
of a `get_config()` file; every field can be overridden as `--config.FIELD=VALUE`. `--workdir` (default
`runs/<config name>`) receives checkpoints, logs, plot and comparison images; a run started again on
the same workdir with the same model and recipe resumes (another is refused: docs/training.md, "Resuming"),
and one run at a time writes a workdir. Several hosts: the `jax.distributed` flags below. The job itself
is `vdsr_jax.training.train_and_evaluate(config, workdir)`.
"""
import sys
import time
from pathlib import Path

from vdsr_jax import configs, distributed
from vdsr_jax.cli import quiet_logging, report_errors
from vdsr_jax.errors import ConfigError


def _resolve_config_argument(argv: list[str]) -> list[str]:
    """`--config NAME` / `--config=NAME` with NAME resolved by `configs.resolve`."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = configs.resolve(argv[i + 1])
        elif arg.startswith("--config="):
            argv[i] = "--config=" + configs.resolve(arg.split("=", 1)[1])
    return argv


def main(argv=None) -> int:
    """The command: absl flags (ml_collections' `--config.FIELD=VALUE` overrides need them) around
    `train_and_evaluate`, with the errors of `vdsr_jax.cli`."""
    started = time.time()  # config.time_budget_minutes counts from here: the imports of training are in it
    from absl import app, flags
    from ml_collections import config_flags

    def one_line(error: Exception) -> int:
        message = str(error)
        if isinstance(error, (AttributeError, KeyError)):  # an unknown field
            text = error
            while isinstance(text, BaseException) and text.args:  # AttributeError(KeyError("'x'\nDid you mean …"))
                text = text.args[0]
            field, _, hint = str(text).partition("\n")  # ml_collections quotes the name, then suggests one
            message = f"no such config field in an override: {field.strip(chr(39) + chr(34))}" + (
                f" ({hint.strip()})" if hint.strip() else "")
        print("error: " + " ".join(message.split()), file=sys.stderr)
        return 1

    try:
        argv = _resolve_config_argument(sys.argv if argv is None else [sys.argv[0], *argv])
    except ConfigError as e:
        return one_line(e)
    try:  # ml_collections applies `--config.FIELD=VALUE` overrides from sys.argv as the flag is defined
        config_flags.DEFINE_config_file("config", str(configs.FOLDER / "demo.py"),
                                        "installed config name or get_config() file", lock_config=True)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        return one_line(e)
    flags.DEFINE_string("workdir", None, "where checkpoints, logs and images go (default runs/<config name>)")
    distributed.define_flags()

    @report_errors
    def run(_argv) -> int:
        from vdsr_jax.training import train_and_evaluate

        quiet_logging()
        config_file = config_flags.get_config_filename(flags.FLAGS["config"])
        workdir = flags.FLAGS.workdir or f"runs/{Path(config_file.partition(':')[0]).stem}"
        distributed.initialize_from_flags()
        train_and_evaluate(flags.FLAGS.config, workdir, started)
        return 0

    if {"-h", "--help", "--helpshort"} & set(argv[1:]):  # absl would list only the flags of `__main__`
        print(__doc__.strip() + "\n\nflags:\n" + "\n".join(
            flags.FLAGS.module_help(module) for module in (__name__, distributed.__name__)))
        return 0

    def parse_flags(args):
        """absl's parsing, with a bad flag or `--config.FIELD=VALUE` override as one line (exit 1)."""
        try:
            return flags.FLAGS(args)
        except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:  # ml_collections' overrides
            sys.exit(one_line(e))

    try:
        app.run(lambda args: sys.exit(run(args)), argv=argv, flags_parser=parse_flags)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
