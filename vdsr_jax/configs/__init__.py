"""Training configs (`get_config()` modules returning an `ml_collections.ConfigDict`), installed with the
package so `--config x234` works from any directory.

`x234` is the paper's recipe (9,960 steps); `x234_long` the same 11.6× longer (115,840 steps), for the best
model; `x2`, `x3`, `x4` the paper's recipe for one scale; `pytorch_vdsr` pytorch-vdsr's
hyper-parameters; `demo` the embedded default (scikit-image photos, no download); `div2k` DIV2K from the
budgeted tile pool.
"""
from pathlib import Path

from vdsr_jax.errors import ConfigError, known_names

NAMES = ("x234", "x234_long", "x2", "x3", "x4", "pytorch_vdsr", "demo", "div2k")
FOLDER = Path(__file__).resolve().parent


def resolve(value: str) -> str:
    """The file for a `--config` value: an existing file path as it is (with any `:argument` suffix that
    ml_collections passes to `get_config`), else an installed config named by itself or by a path ending in
    `configs/<name>.py` (so `--config configs/x234.py` works outside the repository too). ConfigError when
    it is neither."""
    path, colon, argument = value.partition(":")
    if Path(path).expanduser().is_file():
        return value
    name = Path(path).stem if Path(path).suffix == ".py" else path
    if name in NAMES:
        return str(FOLDER / f"{name}.py") + colon + argument
    raise ConfigError(f"--config {value}: no such file, and not an installed config; {known_names(name, NAMES)}")
