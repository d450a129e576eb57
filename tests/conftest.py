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
    from vdsr_jax.convert import from_torch

    return from_torch(require(PRETRAINED), tmp_path_factory.mktemp("pretrained") / "ckpt")
