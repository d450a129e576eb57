"""`vdsr_jax.evaluate` reproduces the published figures of the pretrained weights under the MATLAB protocol,
and its command line meets the one-line-error standard for bad input."""
import json

import jax
import numpy as np
import pytest
from conftest import BENCHMARKS, assert_one_error_line, require, run_cli

from vdsr_jax import checkpoint, media
from vdsr_jax.data import load_folder
from vdsr_jax.inference import TiledVDSR
from vdsr_jax.protocol import evaluate_image, evaluate_sets
from vdsr_jax.resize import imresize

# Kim et al. / pytorch-vdsr, MATLAB protocol: (VDSR PSNR, bicubic PSNR) per scale on Set5.
SET5 = {2: (37.65, 33.69), 3: (33.77, 30.41), 4: (31.45, 28.43)}
# The paper's Table 2, bicubic on Set14: (PSNR, SSIM) per scale; grey `bridge` counted as its own Y.
SET14_BICUBIC = {2: (30.24, 0.8688), 3: (27.55, 0.7742), 4: (26.00, 0.7027)}


@pytest.mark.slow
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


def test_set14_bicubic_reproduces_the_papers_table_with_grey_images_as_their_own_y():
    set14 = require(BENCHMARKS / "Set14")
    images = load_folder(set14, SET14_BICUBIC)
    assert media.read_image(set14 / "bridge.png").shape[-1] == 1
    rows = evaluate_sets(lambda y: y, {"Set14": images}, list(SET14_BICUBIC), show_progress=False)
    for row in rows:
        psnr, ssim = SET14_BICUBIC[row["scale"]]
        assert abs(row["bicubic_psnr"] - psnr) <= 0.01, row
        assert abs(row["bicubic_ssim"] - ssim) <= 0.001, row


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_grey_image_is_evaluated_as_its_own_luminance(dtype):
    top = np.iinfo(dtype).max
    grey = np.random.default_rng(0).integers(0, top + 1, (40, 43, 1), dtype=dtype)
    identity = lambda y: y  # a VDSR that changes nothing must score exactly as bicubic
    result = evaluate_image(identity, grey, 3)
    # independent expectation: the scripts' path for a one-channel image, Y = v / max, no rgb2ycbcr
    y = grey[:39, :42, 0] / top
    bicubic = imresize(imresize(y, 1 / 3), 3)
    error = (y - bicubic)[3:-3, 3:-3] * 255
    assert result["bicubic_psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean(error**2)), abs=1e-9)
    assert result["vdsr_psnr"] == result["bicubic_psnr"] and result["vdsr_ssim"] == result["bicubic_ssim"]
    with_alpha = np.concatenate([grey, np.full_like(grey, top)], -1)
    assert evaluate_image(identity, with_alpha, 3) == result


@pytest.fixture
def data(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "small").mkdir()
    media.write_image(tmp_path / "small" / "tiny.png", np.zeros((16, 16, 3), np.uint8))  # too small for ×4
    return tmp_path


@pytest.mark.slow
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


@pytest.mark.slow
def test_bad_checkpoint_or_json_path(data, pretrained_checkpoint):
    args = ["--data-dir", data / "small", "--scales", "2"]
    status, _, lines = run_cli("evaluate", "--checkpoint", data / "empty", *args, "--json", data / "out.json")
    assert_one_error_line(status, lines, "holds no vdsr_jax checkpoint")
    status, _, lines = run_cli("evaluate", "--checkpoint", pretrained_checkpoint, *args,
                               "--json", data / "missing" / "out.json")
    assert_one_error_line(status, lines, "does not exist")
    assert not (data / "out.json").exists()


def test_a_json_file_written_meanwhile_by_another_process_is_kept_and_the_table_still_printed(
        tmp_path, monkeypatch, capsys):
    """--json names a free file when the command starts; another process writes it during the evaluation:
    its file stays, the table is printed, and the command fails in one line."""
    from vdsr_jax import evaluate
    from vdsr_jax.model import VDSR

    model = VDSR(depth=2, features=4)
    params = model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))["params"]
    weights = checkpoint.save_model(tmp_path / "ckpt", params, model)
    (tmp_path / "set").mkdir()
    media.write_image(tmp_path / "set" / "a.png", np.random.default_rng(0).integers(0, 256, (24, 24, 3), np.uint8))
    target = tmp_path / "r.json"

    def written_meanwhile(*args, **kwargs):
        target.write_text('{"another": "process"}')
        return evaluate_sets(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_sets", written_meanwhile)
    status = evaluate.main(["--checkpoint", str(weights), "--data-dir", str(tmp_path / "set"), "--scales", "2",
                            "--json", str(target)])
    out, err = capsys.readouterr()
    assert_one_error_line(status, err.strip().splitlines(), str(target), "already exists")
    assert "| set | ×2 | 1 |" in out and json.loads(target.read_text()) == {"another": "process"}
