"""`vdsr_jax.evaluate` reproduces the published figures of the pretrained weights under the MATLAB protocol,
and its command line meets the one-line-error standard for bad input."""
import json

import numpy as np
import pytest
from conftest import BENCHMARKS, assert_one_error_line, require, run_cli

from vdsr_jax import checkpoint, cli
from vdsr_jax.evaluate import evaluate_dataset, evaluate_image
from vdsr_jax.inference import TiledVDSR

# Kim et al. / pytorch-vdsr, MATLAB protocol: (VDSR PSNR, bicubic PSNR) per scale on Set5.
SET5 = {2: (37.65, 33.69), 3: (33.77, 30.41), 4: (31.45, 28.43)}
SET14_X2 = 33.16  # an independent implementation of the protocol; see ../shared/README.md


def test_set5_command_reproduces_published_psnr(tmp_path, pretrained_checkpoint):
    set5 = require(BENCHMARKS / "Set5")
    out = tmp_path / "set5.json"
    status, stdout, _ = run_cli("evaluate", "--checkpoint", pretrained_checkpoint, "--data-dir", set5,
                                "--scales", "2,3,4", "--json", out)
    assert status == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["dataset"], r["scale"], r["images"]) for r in rows] == [("Set5", s, 5) for s in SET5]
    for row in rows:
        vdsr, bicubic = SET5[row["scale"]]
        assert abs(row["vdsr_psnr"] - vdsr) <= 0.01, row
        assert abs(row["bicubic_psnr"] - bicubic) <= 0.01, row
        assert row["bicubic_ssim"] < row["vdsr_ssim"] < 1
        line = (f"| Set5 | ×{row['scale']} | 5 | {row['bicubic_psnr']:.2f} | {row['bicubic_ssim']:.4f} | "
                f"{row['vdsr_psnr']:.2f} | {row['vdsr_ssim']:.4f} |")
        assert line in stdout


def test_set14_x2_with_a_grey_image(pretrained_checkpoint):
    set14 = require(BENCHMARKS / "Set14")
    assert cli.read_image(set14 / "bridge.png").shape[-1] == 1
    (row,) = evaluate_dataset(TiledVDSR(*checkpoint.load_model(pretrained_checkpoint)), set14, [2],
                              show_progress=False)
    assert row["images"] == 14
    assert abs(row["vdsr_psnr"] - SET14_X2) <= 0.02, row


def test_grey_image_counts_as_three_equal_channels():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 43), dtype=np.uint8)
    identity = lambda y: y  # a VDSR that changes nothing must score exactly as bicubic
    as_grey = evaluate_image(identity, grey, 3)
    assert as_grey == evaluate_image(identity, np.repeat(grey[..., None], 3, -1), 3)
    assert as_grey["vdsr_psnr"] == as_grey["bicubic_psnr"] and as_grey["vdsr_ssim"] == as_grey["bicubic_ssim"]


@pytest.fixture
def data(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "small").mkdir()
    cli.write_image(tmp_path / "small" / "tiny.png", np.zeros((16, 16, 3), np.uint8))  # too small for ×4
    return tmp_path


@pytest.mark.parametrize("data_dir,scales,message", [
    ("missing", "2", "does not exist"),
    ("empty", "2", "holds no image files"),
    ("small", "4", "too small"),
    ("small", "2,x", "comma-separated integers"),
    ("small", "1", "from 2 to 16"),
    ("small", "17", "from 2 to 16"),
])
def test_bad_data_or_scales(data, pretrained_checkpoint, data_dir, scales, message):
    status, stdout, lines = run_cli("evaluate", "--checkpoint", pretrained_checkpoint, "--data-dir",
                                    data / data_dir, "--scales", scales, "--json", data / "out.json")
    assert_one_error_line(status, lines, message)
    assert stdout == "" and not (data / "out.json").exists()


def test_bad_checkpoint_or_json_path(data, pretrained_checkpoint):
    args = ["--data-dir", data / "small", "--scales", "2"]
    status, _, lines = run_cli("evaluate", "--checkpoint", data / "empty", *args, "--json", data / "out.json")
    assert_one_error_line(status, lines, "holds no checkpoint")
    status, _, lines = run_cli("evaluate", "--checkpoint", pretrained_checkpoint, *args,
                               "--json", data / "missing" / "out.json")
    assert_one_error_line(status, lines, "does not exist")
    assert not (data / "out.json").exists()
