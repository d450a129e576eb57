"""Shared fixtures and helpers: the read-only ../shared folder (skips with a reason where a clone has none),
commands run as a user would, small training runs."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PRETRAINED = SHARED / "pretrained" / "pytorch-vdsr_model_epoch_50.pth"
BENCHMARKS = SHARED / "data" / "benchmarks"
TRAIN291 = SHARED / "data" / "train291"


TORCH_REASON = "needs torch (the reference model, torch files): pip install -e \".[test]\""


def needs_torch():
    """The torch module; skips the calling test (with a reason) where torch is not installed."""
    return pytest.importorskip("torch", reason=TORCH_REASON)


def require(path: Path) -> Path:
    """Skip the calling test when `path` (part of ../shared) is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared (data and pretrained weights) is not beside this clone")
    return path


@pytest.fixture(scope="session")
def pretrained_checkpoint(tmp_path_factory) -> Path:
    """The published pytorch-vdsr weights converted once per session to a vdsr_jax checkpoint."""
    needs_torch()
    from vdsr_jax.weight_forms import convert

    return convert(require(PRETRAINED), tmp_path_factory.mktemp("pretrained") / "ckpt")[0]


def run_cli(module: str, *args, timeout: int = 300):
    """Run `python -m vdsr_jax.<module> args` from the repository root as a user would.

    Returns (exit status, stdout, stderr as a list of lines)."""
    done = subprocess.run([sys.executable, "-m", f"vdsr_jax.{module}", *map(str, args)],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr.strip().splitlines()


BLOCKED_IMPORTS = Path(__file__).resolve().parent / "blocked_imports"


def without_modules(*names: str, env=None) -> dict:
    """An environment (from `env` or os.environ) in which Python processes, and those they start, cannot import
    the top-level modules `names`, as if not installed (tests/blocked_imports/sitecustomize.py; the error
    names the import chain that reached one)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(BLOCKED_IMPORTS), *filter(None, [env.get("PYTHONPATH")])])
    env["VDSR_BLOCKED_IMPORTS"] = ",".join(names)
    return env


def assert_one_error_line(status: int, lines: list[str], *fragments: str) -> None:
    """The command-line standard for bad input: non-zero exit, exactly one stderr line, no traceback."""
    assert status != 0
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---- small training runs (test_train, test_distributed) ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config.model.depth=3", "--config.model.features=8", "--config.patch_size=17", "--config.batch_size=4",
    "--config.train_data=skimage:coins,text", "--config.eval_sets.skimage_held_out=skimage:camera",
    "--config.log_every_steps=2", "--config.comparison_images=1",
]


_STARTED: list[subprocess.Popen] = []  # every process a test started through `spawn`


def spawn(command: list, **popen) -> subprocess.Popen:
    """`command` started in a session of its own with text pipes; it and every process it starts are killed
    after the calling test if they still run, however the test ends."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **popen)
    _STARTED.append(process)
    return process


def kill(process: subprocess.Popen) -> None:
    """SIGKILL to `process` and to the processes it started (its session's group): a multi-process run leaves
    SIGTERM to JAX's preemption service, and a shell script's stages outlive the shell."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone
    process.communicate()


def finish_within(process: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """`process.communicate(timeout)`, killing it and its children when the time runs out."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(process)
        raise


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """After each test, kill what it started through `spawn` that still runs."""
    yield
    while _STARTED:
        kill(_STARTED.pop())


def train_cli(workdir, *overrides, env=None, wait=True, launcher=("-m", "vdsr_jax.train")):
    """`python -m vdsr_jax.train --config configs/demo.py` run as a user would, from the workdir's parent folder
    (outside the repository: the config path resolves to the installed config), at toy size, through `spawn`.
    `launcher`: the Python arguments that run the command (`-c CODE` for a patched one)."""
    Path(workdir).parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *launcher, "--config", "configs/demo.py", f"--workdir={workdir}", *TINY, *overrides]
    process = spawn(command, cwd=Path(workdir).parent, env={**os.environ, **(env or {})})
    if not wait:
        return process
    stdout, stderr = finish_within(process, 600)
    return process.returncode, stdout, stderr


def saved_steps(workdir) -> list[int]:
    """Finished checkpoint steps (orbax writes each into a temporary folder first)."""
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").glob("*") if p.name.isdigit())


def final_params(workdir):
    from vdsr_jax.checkpoint import load_model

    return jax.tree.map(np.asarray, load_model(workdir)[1])


def png_chunks(data: bytes) -> list[bytes]:
    """The chunks of PNG file bytes, each whole (length, type, data, CRC; PNG specification, 5.3)."""
    chunks, pos = [], 8
    while pos < len(data):
        end = pos + 12 + int.from_bytes(data[pos:pos + 4], "big")
        chunks.append(data[pos:end])
        pos = end
    return chunks


def damage(step_folder) -> None:
    """Overwrite every non-empty file of a checkpoint step's parameters, as a disk error or truncation would."""
    files = [f for f in (Path(step_folder) / "params").rglob("*") if f.is_file() and f.stat().st_size]
    assert files
    for f in files:
        f.write_bytes(b"\0" * 7)
