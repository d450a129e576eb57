"""The GPU run (benchmarks/gpu_run.sh) end to end on this CPU in its tiny setting, on a synthetic pack, with the
modules the device image lacks unimportable, so a device call is never spent finding bugs; a failing stage
recorded while the others run; and the pieces it relies on: the packed training Y and its pairs."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import finish_within, needs_torch, spawn, without_modules
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import pack_device_data  # noqa: E402
from benchmarks.gpu.common import DEVICE_ABSENT  # noqa: E402
from vdsr_jax import pretrained  # noqa: E402
from vdsr_jax.data.patches import prepare_pairs  # noqa: E402
from vdsr_jax.data.sources import image_store  # noqa: E402
from vdsr_jax.media import read_image  # noqa: E402


def synthetic_shared(root: Path) -> Path:
    """A ../shared look-alike: 2 + 2 training images (BMP colour, PNG colour, PNG grey) and 1 + 1 benchmark images."""
    rng = np.random.default_rng(0)
    smooth = lambda h, w, c: np.clip(  # noqa: E731 - images with structure, so VDSR has something to learn
        np.cumsum(np.cumsum(rng.normal(0, 4, (h, w, c)), 0), 1) * 0.3 + 128, 0, 255).astype(np.uint8)
    files = {"data/train291/T91/t1.bmp": smooth(70, 90, 3), "data/train291/T91/t2.bmp": smooth(90, 64, 3),
             "data/train291/BSD200/100.png": smooth(96, 80, 3), "data/train291/BSD200/200.png": smooth(80, 96, 1)[..., 0],
             "data/benchmarks/Set5/bird.png": smooth(72, 64, 3), "data/benchmarks/Set14/bridge.png": smooth(64, 64, 1)[..., 0]}
    for name, pixels in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / name)
    return root


def test_training_y8_follows_the_training_rule(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(grey).save(tmp_path / "g.png")
    # MATLAB rgb2ycbcr on uint8: Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    expected = np.floor(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255 + 0.5)
    np.testing.assert_array_equal(pack_device_data.training_y8(tmp_path / "c.png"), expected)
    np.testing.assert_array_equal(pack_device_data.training_y8(tmp_path / "g.png"), grey)  # its own Y


def test_packed_y_gives_the_pairs_of_the_originals(tmp_path):
    """prepare_pairs of the packed Y PNGs, read as training reads them (`folder:` source, path order), equals
    prepare_pairs of the original images in that order bit for bit (colour BMP/PNG and grey)."""
    shared = synthetic_shared(tmp_path / "shared")
    pack_device_data.pack(shared, tmp_path / "pack", wheels=False)
    store = image_store(f"folder:{tmp_path / 'pack' / 'train291'}")
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    rows = sorted(manifest["train291"], key=lambda row: row["file"])  # the source's order: by path
    originals = [read_image(shared / "data" / "train291" / row["source"]) for row in rows]
    assert len(store) == len(originals) and {o.shape[-1] for o in originals} == {1, 3}
    args = ((2, 3, 4), (1.0, 0.7, 0.5), 21)
    reference = prepare_pairs(originals, *args)
    packed = prepare_pairs([store[i] for i in range(len(store))], *args)
    for field in reference._fields:
        np.testing.assert_array_equal(getattr(packed, field), getattr(reference, field), err_msg=field)
        assert getattr(packed, field).dtype == getattr(reference, field).dtype, field


def test_pack_equals_the_training_y_of_every_original(tmp_path):
    """Every packed PNG decodes to round(MATLAB Y) of its original (own values for grey), every benchmark file
    is copied byte for byte: the real pack (.device_pack) in full where it exists, else the first images of
    ../shared, else the synthetic set."""
    from conftest import SHARED, TRAIN291

    real = REPO / ".device_pack"
    if (real / "manifest.json").exists() and TRAIN291.exists():
        assert pack_device_data.verify_pack(real, SHARED) == []
        manifest = json.loads((real / "manifest.json").read_text())
        assert manifest["limit"] is None and len(manifest["train291"]) == 291
        return
    shared = SHARED if TRAIN291.exists() else synthetic_shared(tmp_path / "shared")
    pack_device_data.pack(shared, tmp_path / "pack", wheels=False, limit=3)
    assert pack_device_data.verify_pack(tmp_path / "pack", shared) == []
    first = sorted((tmp_path / "pack" / "train291" / "T91").iterdir())[0]
    Image.fromarray(255 - np.asarray(Image.open(first))).save(first)  # a wrong pack is caught
    problems = pack_device_data.verify_pack(tmp_path / "pack", shared)
    assert len(problems) == 1 and first.name in problems[0]


def tiny_run(tmp_path, *blocked: str) -> tuple[subprocess.CompletedProcess, Path]:
    """benchmarks/gpu_run.sh in its tiny setting on a synthetic pack, with the modules `blocked` unimportable
    in every process it starts: (the finished run, OUT). The script and its stages are killed after 600 s."""
    shared = synthetic_shared(tmp_path / "shared")
    pack_device_data.pack(shared, tmp_path / "pack", wheels=False)
    out = tmp_path / "out"
    env = {**os.environ, "VDSR_GPU_RUN_TINY": "1", "OUT": str(out), "VDSR_PACK": str(tmp_path / "pack"),
           "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    process = spawn(["bash", str(REPO / "benchmarks" / "gpu_run.sh")], cwd=tmp_path, env=without_modules(*blocked, env=env))
    stdout, stderr = finish_within(process, 600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), out


@pytest.mark.slow
def test_tiny_run_end_to_end_on_the_device_image(tmp_path):
    """Without what the device image lacks and the pack does not carry (DEVICE_ABSENT: TFDS, PyAV, …)."""
    needs_torch()  # the run measures torch_reference beside vdsr_jax
    done, out = tiny_run(tmp_path, *DEVICE_ABSENT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "results.json", "run.log", "train_log_x234.jsonl", "train_log_x234_long.jsonl", "weights.npz",
        "weights_x234_long.npz"]
    results = json.loads((out / "results.json").read_text())
    assert results["tiny_smoke_run"]
    assert {(r["impl"], r["setting"]) for r in results["throughput"]["rows"]} >= {
        ("vdsr_jax", "bf16"), ("vdsr_jax", "float32"), ("torch", "fp32"), ("torch", "bf16_channels_last")}
    assert all(p["ratio"] > 0 for p in results["throughput"]["pairs"])
    assert results["sampler"]["patches_per_s"] > 0 and results["goals"]["sampler_over_best_step"] > 0
    inference = results["inference"]
    assert {(r["impl"], r["setting"]) for r in inference["steps"]} == {
        ("vdsr_jax", "float32"), ("vdsr_jax", "bf16"), ("torch", "fp32"), ("torch", "bf16_channels_last")}
    assert inference["frame"] == [36, 64] and inference["ratio_jax_over_torch"] > 0
    recipe, long = results["training"]["x234"], results["training"]["x234_long"]
    # the recipe (30 steps here) fits: run whole, on the config's schedule
    assert recipe["steps"] == 30 and recipe["schedule"] == "recipe" and np.isfinite(recipe["final_loss"])
    assert recipe["loop_patches_per_s"] > 0 and recipe["final_eval"]["psnr/set5_x2"] > 0
    # x234_long does not fit in its 25 s: planned by the library loop's budget, the schedule scaled
    assert long["plan"]["total_steps"] < long["plan"]["recipe_total_steps"] and long["schedule"].startswith("scaled")
    assert long["plan"]["decay_every_steps"] == round(
        long["plan"]["recipe_decay_every_steps"] * long["plan"]["total_steps"] / long["plan"]["recipe_total_steps"])
    assert long["stage_s"] < 25 + 30  # its budget, plus starting Python and JAX and exporting the weights
    assert len((out / "train_log_x234.jsonl").read_text().splitlines()) >= 30 // 5
    rows = results["evaluation"]
    assert [(r["config"], r["dataset"], r["scale"], r["images"], r["paper_psnr"]) for r in rows] == [
        ("x234", "Set5", 2, 1, 37.53), ("x234_long", "Set5", 2, 1, 37.53)]
    meta = pretrained.pretrained_info(out / "weights.npz")  # ready to ship: loader format, provenance, table
    assert meta["model"] == {"depth": 3, "features": 8, "use_bias": True}
    assert meta["provenance"]["steps"] == 30 and meta["provenance"]["evaluation"][0]["vdsr_psnr"] == rows[0]["vdsr_psnr"]
    pretrained.load_pretrained(out / "weights.npz")
    assert pretrained.pretrained_info(out / "weights_x234_long.npz")["provenance"]["steps"] == long["steps"]
    assert "== GPU run (tiny smoke run)" in (out / "run.log").read_text()
    assert {name: entry["status"] for name, entry in results["timeline"].items()} == dict.fromkeys(
        ["bench_jax", "bench_torch", "bench_infer", "train_x234", "eval_x234", "train_x234_long", "eval_x234_long"], "ok")


@pytest.mark.slow
def test_a_failing_stage_is_recorded_and_the_others_still_run(tmp_path):
    """Without ml_collections (vdsr_jax.configs) bench_jax and both training stages fail: each is recorded with
    its exit status and last stderr lines, bench_torch and bench_infer still run, the evaluations are recorded
    as not run (no weights), the summary prints, and the run exits 1."""
    done, out = tiny_run(tmp_path, *DEVICE_ABSENT, "ml_collections")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    timeline = results["timeline"]
    assert list(timeline) == ["bench_jax", "bench_torch", "bench_infer", "train_x234", "eval_x234", "train_x234_long", "eval_x234_long"]
    for name in ("bench_jax", "train_x234", "train_x234_long"):
        assert (timeline[name]["status"], timeline[name]["returncode"]) == ("failed", 1), timeline[name]
        assert any("ModuleNotFoundError" in line for line in timeline[name]["stderr_tail"]), timeline[name]
        assert "-> ml_collections" in timeline[name]["stderr_tail"][-1]  # the import chain that reached it
    torch_ok = importlib.util.find_spec("torch") is not None
    assert timeline["bench_torch"]["status"] == ("ok" if torch_ok else "failed")
    assert timeline["bench_torch"]["returncode"] == (0 if torch_ok else 1)
    assert [timeline[name]["status"] for name in ("eval_x234", "eval_x234_long")] == ["not run", "not run"]
    assert all(isinstance(entry["seconds"], float) for entry in timeline.values())
    assert results["training"] == {"x234": {}, "x234_long": {}} and results["evaluation"] == []
    log = (out / "run.log").read_text()
    assert "== GPU run (tiny smoke run)" in log and "stages: bench_jax failed" in log
    assert "\nbench_jax failed (exit 1): blocked import: " in log
