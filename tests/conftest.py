"""Shared fixtures: the read-only ../shared folder (skips with a reason where a clone has none)."""
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PRETRAINED = SHARED / "pretrained" / "pytorch-vdsr_model_epoch_50.pth"
BENCHMARKS = SHARED / "data" / "benchmarks"
TRAIN291 = SHARED / "data" / "train291"


def require(path: Path) -> Path:
    """Skip the calling test when `path` (part of ../shared) is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared (data and pretrained weights) is not beside this clone")
    return path


@pytest.fixture(scope="session")
def pretrained_checkpoint(tmp_path_factory) -> Path:
    """The published pytorch-vdsr weights converted once per session to a vdsr_jax checkpoint."""
    pytest.importorskip("torch", reason="converting the published weights needs torch (pip install -e \".[test]\")")
    from vdsr_jax.convert import from_torch

    return from_torch(require(PRETRAINED), tmp_path_factory.mktemp("pretrained") / "ckpt")


def run_cli(module: str, *args, timeout: int = 300):
    """Run `python -m vdsr_jax.<module> args` from the repository root as a user would.

    Returns (exit status, stdout, stderr as a list of lines)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", f"vdsr_jax.{module}", *map(str, args)],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr.strip().splitlines()


def assert_one_error_line(status: int, lines: list[str], *fragments: str) -> None:
    """The command-line standard for bad input: non-zero exit, exactly one stderr line, no traceback."""
    assert status != 0
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
