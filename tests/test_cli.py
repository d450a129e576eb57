"""The installed commands: console scripts that work from any directory, `--help`, and the one mapping from
errors to exit statuses (a user error is one line; a programming error keeps its traceback)."""
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_one_error_line

from vdsr_jax import checkpoint, configs, media
from vdsr_jax.cli import report_errors
from vdsr_jax.errors import DataError
from vdsr_jax.model import VDSR

SCRIPTS = Path(sys.executable).parent
COMMANDS = ["vdsr-train", "vdsr-evaluate", "vdsr-upscale", "vdsr-convert"]


def test_every_declared_script_names_a_command_main():
    """pyproject's entry points, as the installer resolves them (`module:function`), independent of what an
    older install left beside the interpreter."""
    import importlib
    import tomllib

    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(COMMANDS) <= set(declared)
    for target in declared.values():
        module, function = target.split(":")
        assert getattr(importlib.import_module(module), function).__module__ == module


def script(name: str) -> str:
    path = SCRIPTS / name
    if not path.exists():
        pytest.skip(f"{name} is not installed beside {sys.executable} (pip install -e . installs it)")
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name, tmp_path):
    done = subprocess.run([script(name), "--helpshort" if name == "vdsr-train" else "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "config" in done.stdout if name == "vdsr-train" else name in done.stdout


def save_tiny_checkpoint(where: Path) -> None:
    model = VDSR(depth=3, features=8)
    checkpoint.save_model(where, model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"], model)


@pytest.mark.slow
def test_upscale_from_another_directory(tmp_path):
    save_tiny_checkpoint(tmp_path / "ckpt")
    media.write_image(tmp_path / "in.png", np.full((9, 7, 3), 100, np.uint8))
    done = subprocess.run([script("vdsr-upscale"), "in.png", "--checkpoint", "ckpt", "--scale", "2", "-o", "out.png"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert media.read_image(tmp_path / "out.png").shape == (18, 14, 3)


@pytest.mark.parametrize("value, expected", [
    ("x234", "x234.py"), ("configs/demo.py", "demo.py"), ("demo:arg", "demo.py:arg"),
])
def test_config_names_and_repository_paths_resolve_to_installed_configs(value, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert configs.resolve(value) == str(configs.FOLDER / expected)
    own = tmp_path / "mine.py"
    own.write_text("def get_config(): ...\n")
    assert configs.resolve(str(own)) == str(own)


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(capsys):
    @report_errors
    def user_error(argv):
        raise DataError("the folder is empty")

    @report_errors
    def bug(argv):
        return {}["missing"]

    assert user_error(None) == 1
    assert_one_error_line(1, capsys.readouterr().err.strip().splitlines(), "error: the folder is empty")
    with pytest.raises(KeyError):
        bug(None)


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["--config.no_such_field=1"], "no such config field in an override: no_such_field"),
    (["--config.num_stepz=1"],  # ml_collections' suggestion, as text (not a repr with \' and \n)
     'no such config field in an override: num_stepz (Did you mean "num_steps" instead of "num_stepz"?)'),
    (["--config", "missing_config.py"], "--config missing_config.py: no such file, and not an installed config; known: x234,"),
    (["--config=nosuchconfig"], "--config nosuchconfig: no such file"),
    (["--no_such_flag"], "no_such_flag"),
])
def test_train_refuses_bad_flags_and_overrides_in_one_line(args, words, tmp_path):
    done = subprocess.run([script("vdsr-train"), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert_one_error_line(done.returncode, done.stderr.strip().splitlines(), words)
    assert not (tmp_path / "runs").exists()


NO_TORCH = "import sys; sys.modules['torch'] = None; from vdsr_jax import convert; sys.exit(convert.main(sys.argv[1:]))"


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--from-torch", "weights.pth", "--out", "ckpt"], ["--to-torch", "ckpt", "--out",
                                                                                     "weights.pth"]])
def test_convert_without_torch_says_how_to_install_it(args, tmp_path):
    """torch is optional: where it is missing (simulated), convert says so in one line, not that the file is bad."""
    (tmp_path / "weights.pth").write_bytes(b"PK")
    save_tiny_checkpoint(tmp_path / "ckpt")
    done = subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert_one_error_line(done.returncode, done.stderr.strip().splitlines(), "needs PyTorch, which is not installed",
                          'pip install "vdsr_jax[torch]"')
