"""The budgeted pool mode: tiles equal the whole-image MATLAB pipeline, the pool is a pure function of
(seed, step), budgets too small for one batch are refused."""
import json
import re
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from vdsr_jax.color import luminance
from vdsr_jax.data import patches, pool
from vdsr_jax.data.sources import ImageStore, image_store, read_shapes
from vdsr_jax.resize import bicubic_degradation, imresize, modcrop


@pytest.mark.parametrize("downsize", [1.0, 0.7, 0.5])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tiles_equal_the_whole_image_matlab_pair_cropped(downsize, scale):
    rng = np.random.default_rng(scale)
    image = (rng.random((83, 71, 3)) * 255).astype(np.uint8)
    variant = luminance(image, integer=True)
    variant = variant if downsize == 1 else imresize(variant, downsize)
    whole_input, whole_target = bicubic_degradation(modcrop(variant, scale), scale)
    vh, vw = whole_target.shape
    assert (vh, vw) == patches.variant_shape(83, 71, downsize, scale)
    for top, left, th, tw in [(0, 0, 17, 19), (vh - 17, vw - 13, 17, 13), (5, 7, 20, 20), (0, 0, vh, vw)]:
        tile_input, tile_target = pool.tile_pair(image, downsize, scale, top, left, th, tw)
        np.testing.assert_allclose(tile_target, whole_target[top:top + th, left:left + tw], atol=1e-12, rtol=0)
        np.testing.assert_allclose(tile_input, whole_input[top:top + th, left:left + tw], atol=1e-12, rtol=0)


def data_config(**overrides):
    config = ml_collections.ConfigDict(dict(mode="pool", device_budget_mib=1.0, host_budget_mib=64.0, tile_size=32,
                                            tiles_per_image=2, refresh_tiles=4, refresh_every_steps=3, workers=1))
    config.update(overrides)
    return config


def test_the_pool_at_any_step_is_the_same_whether_refreshed_or_rebuilt():
    rng = np.random.default_rng(0)
    images = [(rng.random((40 + 9 * i, 50 + 5 * i, 3)) * 255).astype(np.uint8) for i in range(5)]
    store = ImageStore(images)
    catalogue = patches.catalogue(read_shapes(store), (2, 3), (1.0, 0.7), 17)
    layout = pool.layout_from_config(data_config(device_budget_mib=0.1), 17)
    assert layout.slots == 12  # ⌊0.1 MiB / (8·32² + 12 B)⌋ = 12, a multiple of refresh_tiles
    refreshed = pool.TilePool(store, catalogue, layout, seed=7, workers=1)
    for step in range(0, 13):
        live = refreshed.source_for(step)
    rebuilt = pool.TilePool(store, catalogue, layout, seed=7, workers=1).source_for(12)
    for a, b in zip(jax.tree.leaves(live), jax.tree.leaves(rebuilt)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(set(np.asarray(rebuilt.scales).tolist())) == 2


class SlowStore(ImageStore):
    """Images that take `delay` seconds each to read, like large PNGs on a slow host."""

    def __init__(self, images, delay):
        super().__init__(images)
        self.delay = delay

    def __getitem__(self, i):
        time.sleep(self.delay)
        return super().__getitem__(i)


def wait_and_period(tiles, steps, step_seconds):
    """Steps of `step_seconds` of device work each, fed by `tiles`: `input_report` over them."""
    tiles.source_for(0)  # the first fill is not a wait
    start = time.perf_counter()
    for step in range(1, steps):
        time.sleep(step_seconds)
        tiles.source_for(step)
    report = tiles.input_report(time.perf_counter() - start, steps - 1)
    tiles.close()
    return report


@pytest.mark.slow
def test_a_host_slower_than_the_refresh_is_reported_with_a_refresh_period_that_keeps_up():
    """Every refresh needs 2 images of 100 ms; steps take 10 ms. Refreshing every step, training waits most of
    the time, and the period named keeps the host 3× ahead (⌈3 · 0.2 s / 10 ms⌉ = 60, less where sleeps
    overshoot); at that period it no longer waits."""
    rng = np.random.default_rng(0)
    store = SlowStore([(rng.random((60, 60, 3)) * 255).astype(np.uint8) for _ in range(6)], delay=0.1)
    catalogue = patches.catalogue(read_shapes(store), (2,), (1.0,), 17)
    layout = pool.layout_from_config(data_config(device_budget_mib=0.1, refresh_every_steps=1), 17)
    tiles = pool.TilePool(store, catalogue, layout, seed=0, workers=1)
    wait, period = wait_and_period(tiles, 12, 0.01)
    assert wait > 0.5 and 20 <= period <= 70, (wait, period)
    layout = pool.layout_from_config(data_config(device_budget_mib=0.1, refresh_every_steps=period), 17)
    wait, _ = wait_and_period(pool.TilePool(store, catalogue, layout, seed=0, workers=1), 2 * period + 2, 0.01)
    assert wait < 0.1, wait


@pytest.mark.parametrize("overrides, words", [
    (dict(device_budget_mib=0.01), "device_budget_mib=0.01 is too small for one refresh"),
    (dict(tile_size=8), "tile_size=8 is smaller than the patch"),
    (dict(refresh_tiles=3), "multiple of data.tiles_per_image"),
])
def test_a_pool_that_cannot_hold_a_batch_is_refused(overrides, words):
    from vdsr_jax.errors import ConfigError

    with pytest.raises(ConfigError, match=words):
        pool.layout_from_config(data_config(**overrides), 17)


def write_div2k_stand_in(root, count=5):
    """DIV2K's layout with small random PNGs, and one damaged file in the middle of the train folder."""
    from vdsr_jax.media import write_image

    rng = np.random.default_rng(0)
    for folder, names in (("DIV2K_train_HR", range(1, count + 1)), ("DIV2K_valid_HR", [801])):
        (root / folder).mkdir(parents=True)
        for i in names:
            write_image(root / folder / f"{i:04d}.png", (rng.random((60 + 7 * (i % 5), 80, 3)) * 255).astype(np.uint8))
    (root / "DIV2K_train_HR" / "0003.png").write_bytes(b"not a png")


@pytest.mark.slow
def test_div2k_config_trains_from_the_pool_and_resumes_bit_exact(tmp_path):
    """The div2k config on a generated stand-in: the damaged image is skipped with a warning naming it, and
    6 straight steps equal 3 steps + a resume to 6 (the pool rebuilt mid-way through its refresh cycle)."""
    from conftest import BENCHMARKS, ROOT, TINY, final_params, finish_within, require, spawn

    write_div2k_stand_in(tmp_path / "DIV2K")
    common = ["--config.train_manual_dir", str(tmp_path / "DIV2K"), f"--config.eval_sets.set5={require(BENCHMARKS)}",
              "--config.eval_sets.set14=skimage:camera", "--config.eval_scales=(2,)", "--config.eval_every_steps=100",
              "--config.data.tile_size=32", "--config.data.tiles_per_image=2", "--config.data.refresh_tiles=4",
              "--config.data.refresh_every_steps=2", "--config.data.device_budget_mib=0.25"]

    tiny = [a for a in TINY if not a.startswith(("--config.train_data", "--config.eval_sets"))]

    def start(workdir, steps):
        command = [sys.executable, "-m", "vdsr_jax.train", "--config", "div2k", f"--workdir={workdir}", *tiny,
                   f"--config.data_dir={workdir}_data", *common, f"--config.num_steps={steps}"]
        return spawn(command, cwd=ROOT)

    runs = {name: start(tmp_path / name, steps) for name, steps in (("straight", 6), ("resumed", 3))}
    outputs = {name: finish_within(p, 400) for name, p in runs.items()}
    for name, p in runs.items():
        assert p.returncode == 0, outputs[name][1][-2000:]
    stdout, stderr = outputs["straight"]
    assert "skipping unreadable image" in stderr and "0003.png" in stderr and "skipped 1 unreadable of 5" in stderr
    assert "data: pool mode, 4 images, 28 tiles of 32²" in stdout and "set14_x2" in stdout
    logged = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all("input_wait_fraction" in r for r in logged if "loss" in r)  # logged at every log step
    assert "data: the host builds" in stdout or "input-bound: training waited" in stderr
    resumed = start(tmp_path / "resumed", 6)
    stdout, stderr = finish_within(resumed, 400)
    assert resumed.returncode == 0 and "resuming from step 3" in stdout, stderr[-2000:]
    for a, b in zip(jax.tree.leaves(final_params(tmp_path / "straight")),
                    jax.tree.leaves(final_params(tmp_path / "resumed"))):
        np.testing.assert_array_equal(a, b)


def test_bad_data_is_one_clear_error_before_anything_compiles():
    """A budget too small for one batch, pairs over the budget, a dataset smaller than one patch."""
    from vdsr_jax.configs import demo
    from vdsr_jax.errors import ConfigError
    from vdsr_jax.training import exact_pairs, validate_config

    config = demo.get_config()
    config.data.mode, config.data.device_budget_mib = "pool", 1.0
    with pytest.raises(ConfigError, match=r"^config.data.device_budget_mib=1 is too small for one refresh of 64 "
                                          r"tiles of 256×256 .* needs ≥ 33 MiB"):
        validate_config(config, device_count=1)
    config = demo.get_config()
    config.train_data, config.data.device_budget_mib = "skimage:coins", 1.0
    store = image_store(config.train_data)
    with pytest.raises(ConfigError, match=r"the exact mode needs \d+ MiB on each device, over "
                                          r"config.data.device_budget_mib=1; raise it or use config.data.mode='pool'"):
        exact_pairs(config, store, None, print)
    config.patch_size = 400
    with pytest.raises(ConfigError, match="no training image is at least 400×400"):
        exact_pairs(config, store, None, print)
