"""Optional stacks are imported only where they are used: the model, the train step, the data pipeline,
training, inference, evaluation and the commands import (and training and still-image upscaling run) without
tensorflow-datasets, array_record, PyAV, tensorboardX, TensorFlow, torch, onnx or onnxruntime; a feature that needs a missing one
says so in one `error:` line. Each check runs in a fresh process where those modules cannot be imported
(conftest.without_modules)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_one_error_line, train_cli, without_modules

from vdsr_jax.media import write_image

pytestmark = pytest.mark.slow

OPTIONAL = ("tensorflow_datasets", "array_record", "av", "tensorboardX", "tensorflow", "torch", "onnx", "onnxruntime")
CORE = ("vdsr_jax.model", "vdsr_jax.train_step", "vdsr_jax.data.patches", "vdsr_jax.data.pool", "vdsr_jax.data",
        "vdsr_jax.inference", "vdsr_jax.metrics", "vdsr_jax.protocol", "vdsr_jax.pretrained", "vdsr_jax.weight_forms",
        "vdsr_jax.metric_writer",
        "vdsr_jax.training", "vdsr_jax.train", "vdsr_jax.evaluate", "vdsr_jax.upscale_files", "vdsr_jax.media",
        "vdsr_jax.media.video", "vdsr_jax.media.animation", "vdsr_jax.export", "vdsr_jax.onnx_graphs",
        "vdsr_jax.stablehlo", "vdsr_jax.api")


def python(code: str, *blocked: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=without_modules(*blocked), cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("module", CORE)
def test_imports_without_the_optional_stacks(module):
    done = python(f"import {module}", *OPTIONAL)
    assert done.returncode == 0, f"import {module}:\n" + "\n".join(done.stderr.splitlines()[-4:])


def test_a_blocked_import_names_its_chain():
    """The check above can fail, and says why: a module that does need TFDS names the imports that reached it."""
    done = python("import vdsr_jax.data.train291", *OPTIONAL)
    assert done.returncode == 1
    assert ("blocked import: __main__ -> vdsr_jax.data.train291 -> vdsr_jax.data.folder_builder -> tensorflow_datasets"
            in done.stderr), done.stderr


def test_a_tfds_source_without_tfds_is_one_line(tmp_path):
    status, _, stderr = train_cli(tmp_path / "run", "--config.train_data=train291",
                                  f"--config.train_manual_dir={tmp_path}", env=without_modules(*OPTIONAL))
    assert_one_error_line(status, stderr.strip().splitlines(), "train291", "pip install tensorflow-datasets")


def test_training_runs_without_tfds_or_tensorboardx(tmp_path):
    """skimage sources: metrics.jsonl and the plot are written, TensorBoard is off, said once in one line."""
    workdir = tmp_path / "run"
    status, stdout, stderr = train_cli(workdir, "--config.num_steps=4", "--config.eval_every_steps=4",
                                       "--config.checkpoint_every_steps=4", env=without_modules(*OPTIONAL))
    assert status == 0, stderr[-3000:]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    assert any("psnr/skimage_held_out_x2" in r for r in records)
    assert (workdir / "training.png").stat().st_size > 0
    assert not (workdir / "tensorboard").exists()
    notes = [line for line in (stdout + stderr).splitlines() if "tensorboardX" in line]
    assert notes == ["TensorBoard logs are off: tensorboardX is not installed (pip install tensorboardX)"], notes


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A small random VDSR saved as a weights file (vdsr_jax.pretrained format)."""
    import jax
    import jax.numpy as jnp

    from vdsr_jax.model import VDSR
    from vdsr_jax.pretrained import export_pretrained

    model = VDSR(depth=3, features=8)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    return export_pretrained(params, model, tmp_path_factory.mktemp("weights") / "tiny.npz", {})


def test_still_images_upscale_without_pyav_and_a_video_says_what_to_install(tmp_path, weights):
    write_image(tmp_path / "still.png", np.full((12, 10, 3), 100, np.uint8))
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 64)
    command = ("import sys; from vdsr_jax.upscale_files import main; "
               f"sys.exit(main([sys.argv[1], '-o', sys.argv[2], '--scale', '2', '--checkpoint', {str(weights)!r}]))")
    still = subprocess.run([sys.executable, "-c", command, str(tmp_path / "still.png"), str(tmp_path / "big.png")],
                           env=without_modules(*OPTIONAL), capture_output=True, text=True, timeout=300)
    assert still.returncode == 0, still.stderr[-3000:]
    assert (tmp_path / "big.png").stat().st_size > 0
    video = subprocess.run([sys.executable, "-c", command, str(tmp_path / "clip.mp4"), str(tmp_path / "big.mp4")],
                           env=without_modules(*OPTIONAL), capture_output=True, text=True, timeout=300)
    assert_one_error_line(video.returncode, video.stderr.strip().splitlines(), "clip.mp4", "PyAV", "pip install av")
    assert not (tmp_path / "big.mp4").exists()

