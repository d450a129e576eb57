"""Training: patches match MATLAB's whole-image pipeline, N devices = 1 device, exact resume after kill -9,
divergence and config guards, logs. What a workdir accepts (another recipe, a damaged checkpoint, a second
run): test_workdir."""
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, final_params, saved_steps, train_cli
from vdsr_jax import checkpoint, configs
from vdsr_jax.configs import demo
from vdsr_jax.data import patches
from vdsr_jax.errors import ConfigError
from vdsr_jax.model import VDSR, model_from_config
from vdsr_jax.optim import make_optimizer
from vdsr_jax.resize import imresize, modcrop
from vdsr_jax.train_step import create_train_state, data_mesh, make_train_step
from vdsr_jax.training import loss_scale, resolved, validate_config

# MATLAB rgb2ycbcr's Y row for RGB in [0, 1] (output in [0, 255]); on a uint8 image MATLAB rounds the result.
MATLAB_Y = np.array([65.481, 128.553, 24.966])

@pytest.mark.slow
def test_patches_equal_whole_image_matlab_resize_then_crop():
    """Each sampled pair is a crop of some augmented whole image's MATLAB bicubic pair, found by search.

    Augmentation order: downsize, modcrop, then rotation/flip of the whole image, then the bicubic pair.
    """
    rng = np.random.default_rng(0)
    hr = (rng.random((30, 37, 3)) * 255).astype(np.uint8)
    scales, patch = (2, 3), 9
    source = patches.prepare_pairs([hr], scales, (1.0, 0.7), patch)
    y = np.floor(16 + (hr / 255.0) @ MATLAB_Y + 0.5) / 255  # generate_train.m: rgb2ycbcr on uint8, then im2double
    candidates = []  # (bicubic input, target) of every augmented whole image, by numpy imresize
    for downsize in (1.0, 0.7):
        resized = y if downsize == 1 else imresize(y, downsize)
        for scale in scales:
            for flip in (False, True):
                for rotation in range(4):
                    cropped = modcrop(resized, scale)
                    target = np.rot90(cropped[:, ::-1] if flip else cropped, rotation)
                    candidates.append(((scale, flip, rotation), imresize(imresize(target, 1 / scale), scale), target))
    device_source = jax.tree.map(jnp.asarray, source)
    inputs, targets = patches.sample_patches(device_source, jax.random.key(3), jnp.arange(24), patch)
    seen = set()
    for sampled_input, sampled_target in zip(np.asarray(inputs)[..., 0], np.asarray(targets)[..., 0]):
        matches = []
        for augmentation, bicubic, target in candidates:
            windows = np.lib.stride_tricks.sliding_window_view(target, (patch, patch))
            found = np.argwhere(np.abs(windows - sampled_target).max(axis=(-1, -2)) < 1e-6)
            for r, c in found:
                matches.append((np.abs(bicubic[r:r + patch, c:c + patch] - sampled_input).max(), augmentation))
        error, augmentation = min(matches)
        assert error < 1e-5
        seen.add(augmentation)
    assert {scale for scale, _, _ in seen} == set(scales)  # a random scale per patch
    assert {flip for _, flip, _ in seen} == {False, True} and len({rot for _, _, rot in seen}) > 1


class Recording(list):
    """A list of images that records which ones are read."""

    def __init__(self, images):
        super().__init__(images)
        self.read = set()

    def __getitem__(self, i):
        self.read.add(i)
        return super().__getitem__(i)


@pytest.mark.parametrize("count", [2, 3])
def test_each_process_reads_only_its_share_and_the_shares_make_the_whole_pairs_bit_for_bit(count):
    rng = np.random.default_rng(1)
    images = [(rng.random((20 + 7 * i, 33 - 2 * i, 3)) * 255).astype(np.uint8) for i in range(5)]
    images.insert(2, np.zeros((8, 40, 3), np.uint8))  # no variant holds a patch: a gap in the layout
    whole = patches.prepare_pairs(images, (2, 3), (1.0, 0.7), 9)
    cat = patches.catalogue(np.array([im.shape[:2] for im in images]), (2, 3), (1.0, 0.7), 9)
    combined = {"inputs": 0, "targets": 0}
    for rank in range(count):
        store = Recording(images)
        share = patches.prepare_share(store, cat, (rank, count))
        assert store.read == {i for i in range(rank, len(images), count) if i != 2}
        for name in combined:
            combined[name] = combined[name] + getattr(share, name).view(np.uint32)
        for name in ("offsets", "heights", "widths", "scales"):
            np.testing.assert_array_equal(getattr(share, name), getattr(whole, name))
    for name, bits in combined.items():
        np.testing.assert_array_equal(bits.view(np.float32), getattr(whole, name))
        assert np.array_equal(bits, getattr(whole, name).view(np.uint32))  # bit for bit, not just equal values

@pytest.mark.slow
def test_sampled_patches_are_uniform_crops_with_each_of_the_8_rotations_and_flips():
    """Against numpy: every patch is `np.rot90(np.fliplr(crop) if flip else crop, rotation)` of a crop of its
    variant; variants come ∝ their positions, and every position, rotation and flip occurs about equally.
    Patch i depends only on (key, i)."""
    shapes, patch, n = [(12, 15), (20, 11)], 5, 4000
    sizes = [h * w for h, w in shapes]
    pixels = np.arange(sum(sizes), dtype=np.float32)  # a pixel's value is its flat index
    images = [pixels[:sizes[0]].reshape(shapes[0]), pixels[sizes[0]:].reshape(shapes[1])]
    source = patches.PatchSource(pixels + 0.5, pixels, np.array([0, sizes[0]], np.int32),
                                 *(np.array(column, np.int32) for column in zip(*shapes)), np.array([2, 3], np.int32))

    def crop_of(patch_values):
        """(variant, top, left) and the crop holding these pixels: its top-left one has the smallest index."""
        corner = int(patch_values.min())
        variant = int(corner >= sizes[0])
        top, left = divmod(corner - variant * sizes[0], shapes[variant][1])
        crop = images[variant][top:top + patch, left:left + patch]
        assert crop.shape == (patch, patch)
        return (variant, top, left), crop

    sample = jax.jit(patches.sample_patches, static_argnums=(3, 4))
    inputs, targets = (np.asarray(a)[..., 0] for a in sample(source, jax.random.key(0), jnp.arange(n), patch, True))
    np.testing.assert_array_equal(inputs, targets + 0.5)
    transforms = {(rotation, flip): lambda crop, r=rotation, f=flip: np.rot90(np.fliplr(crop) if f else crop, r)
                  for rotation in range(4) for flip in (False, True)}
    seen, corners = {key: 0 for key in transforms}, {}
    for target in targets:
        corner, crop = crop_of(target)
        matches = [key for key, transform in transforms.items() if np.array_equal(transform(crop), target)]
        assert len(matches) == 1
        seen[matches[0]] += 1
        corners[corner] = corners.get(corner, 0) + 1
    assert all(abs(count - n / 8) < 110 for count in seen.values()), seen  # ±5 σ
    positions = [(h - patch + 1) * (w - patch + 1) for h, w in shapes]
    assert len(corners) == sum(positions)  # every position of both variants (≈ 20 draws each)
    first = sum(count for (variant, _, _), count in corners.items() if variant == 0)
    assert abs(first - n * positions[0] / sum(positions)) < 160  # ∝ positions, ±5 σ
    _, plain = sample(source, jax.random.key(0), jnp.arange(n), patch, False)
    for values in np.asarray(plain)[..., 0]:
        np.testing.assert_array_equal(values, crop_of(values)[1])
    tail, _ = sample(source, jax.random.key(0), jnp.arange(n - 8, n), patch, True)
    np.testing.assert_array_equal(np.asarray(tail)[..., 0], inputs[-8:])


MULTI_DEVICE_SCRIPT = """
import jax, numpy as np
from vdsr_jax.configs import demo
from vdsr_jax.data import load_images, patches
from vdsr_jax.model import VDSR
from vdsr_jax.optim import make_optimizer
from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, replicated
from vdsr_jax.training import loss_scale
config = demo.get_config()
images = load_images("skimage:coins")
source = patches.prepare_pairs(images, (2, 3), (1.0,), 17)
params = []
for n in (1, 4):
    mesh = data_mesh(jax.devices()[:n])
    state = create_train_state(VDSR(depth=4, features=8), make_optimizer(config, 10), jax.random.key(0))
    state = jax.device_put(state, replicated(mesh))
    step = make_sampling_train_step(mesh, 8, 17, True, loss_scale(config))
    for _ in range(3):
        state, loss = step(state, jax.device_put(source, replicated(mesh)), jax.random.key(1))
    params.append(jax.tree.map(np.asarray, state.params))
print(len(jax.devices()), max(float(np.abs(a - b).max()) for a, b in zip(*map(jax.tree.leaves, params))))
"""


@pytest.mark.slow
def test_four_devices_update_like_one_device_on_the_same_global_batch():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    devices, difference = out.stdout.split()
    assert devices == "4" and float(difference) < 1e-5


@pytest.mark.slow
def test_resume_after_kill_9_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path):
    run = ["--config.num_steps=16", "--config.checkpoint_every_steps=2", "--config.eval_every_steps=8"]
    code, _, stderr = train_cli(tmp_path / "straight", *run)
    assert code == 0, stderr[-2000:]

    interrupted = tmp_path / "interrupted"
    process = train_cli(interrupted, *run, wait=False)
    deadline = time.time() + 300
    while not any(step >= 6 for step in saved_steps(interrupted)):
        assert process.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = saved_steps(interrupted)[-1]
    assert killed_at < 16
    code, stdout, stderr = train_cli(interrupted, *run)
    assert code == 0, stderr[-2000:]
    assert "resuming from step" in stdout

    for a, b in zip(jax.tree.leaves(final_params(tmp_path / "straight")), jax.tree.leaves(final_params(interrupted))):
        np.testing.assert_array_equal(a, b)
    records = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 16  # the killed part's records are not duplicated
    assert any("psnr/skimage_held_out_x2" in r for r in records)
    assert (interrupted / "training.png").stat().st_size > 0
    assert list((interrupted / "tensorboard").glob("events.out.tfevents.*"))
    assert list((interrupted / "images").glob("*.png"))


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    code, stdout, stderr = train_cli(tmp_path, "--config.num_steps=40", "--config.checkpoint_every_steps=1",
                                     "--config.eval_every_steps=100", "--config.optimizer.learning_rate=1e12",
                                     "--config.optimizer.clip_theta=1e20")
    assert code != 0
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("error: the loss became") and "at step" in message and "Traceback" not in stderr
    bad_step = int(message.split("at step ")[1].split(";")[0])
    model, params = checkpoint.load_model(tmp_path)
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))
    assert saved_steps(tmp_path)[-1] == bad_step - 1


@pytest.mark.parametrize("field, value, words", [
    ("scales", (2, 5, 17), "scales"),
    ("patch_size", 1, "patch_size"),
    ("batch_size", 3, "divisible"),
    ("time_budget_minutes", -1.0, "time_budget_minutes"),
    ("train_manual_dir", "/nonexistent/folder", "does not exist"),
])
def test_bad_config_is_refused_before_anything_compiles(field, value, words):
    config = demo.get_config()
    config.train_data = "train291"
    setattr(config, field, value)
    with pytest.raises(ConfigError, match=words):
        validate_config(config, device_count=2 if field == "batch_size" else 1)


@pytest.mark.parametrize("name", configs.NAMES)
def test_config_loss_scale_follows_a_batch_size_set_after_get_config(name):
    config = importlib.import_module(f"vdsr_jax.configs.{name}").get_config()
    config.batch_size = 32  # what `--config.batch_size=32` does to the loaded config
    expected = 1.0 if name == "pytorch_vdsr" else 0.5 / 32  # docs/training.md: the summed loss, or ½·mean
    assert resolved(config).loss_scale == expected
    # the train step's loss is that factor times the batch's summed squared error, computed here by hand
    model = VDSR(depth=2, features=4, zero_init_output=False)
    inputs, targets = jax.random.uniform(jax.random.key(0), (2, 32, 9, 9, 1))
    mesh = data_mesh(jax.devices()[:1])
    state = create_train_state(model, make_optimizer(config, 10), jax.random.key(1))
    summed = float(jnp.sum((model.apply({"params": state.params}, inputs) - targets) ** 2))
    _, loss = make_train_step(mesh, loss_scale(config))(state, inputs, targets)
    assert float(loss) == pytest.approx(expected * summed, rel=1e-5)


@pytest.mark.slow
def test_bad_config_on_the_command_line_gives_one_clear_line(tmp_path):
    code, _, stderr = train_cli(tmp_path, "--config.scales=(2,7,17)")
    assert code != 0 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: config.scales")
    assert not (tmp_path / "checkpoints").exists()


def test_checkpoints_keep_the_last_k_and_the_best_by_psnr(tmp_path):
    config = demo.get_config()
    from vdsr_jax.optim import make_optimizer
    from vdsr_jax.train_step import create_train_state

    config.model.depth, config.model.features = 2, 4
    model = model_from_config(config)
    state = create_train_state(model, make_optimizer(config, 10), jax.random.key(0))
    psnrs = {1: 30.0, 2: 35.0, 3: 31.0, 4: None, 5: 32.0, 6: 33.0}
    manager = checkpoint.training_manager(tmp_path, keep_last=2)
    for step, psnr in psnrs.items():
        metrics = None if psnr is None else {checkpoint.BEST_METRIC: psnr}
        checkpoint.save_training(manager, state.replace(step=step), model, jax.random.key(1), metrics)
    manager.close()
    kept = sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit())
    assert kept == [2, 5, 6]  # the best (35 dB at step 2) and the latest two


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_sigterm_mid_run_saves_at_the_next_step_and_the_restart_is_bit_exact(tmp_path, signum):
    """A preemption notice (SIGINT behaves the same; see vdsr_jax.preemption) between periodic checkpoints:
    the run saves the step it is on, exits 128 + signal, and the restart ends with the uninterrupted run's
    parameters."""
    # 40 steps: the signal, sent once step 2 is logged, must land while steps remain even where they are fast
    run = ["--config.num_steps=40", "--config.checkpoint_every_steps=100", "--config.eval_every_steps=100"]
    straight = train_cli(tmp_path / "straight", *run, wait=False)
    interrupted = tmp_path / "interrupted"
    process = train_cli(interrupted, *run, wait=False)
    deadline = time.time() + 300
    metrics = interrupted / "metrics.jsonl"
    while not (metrics.exists() and any(json.loads(line)["step"] >= 2 for line in metrics.read_text().splitlines()
                                        if line.strip())):
        assert process.poll() is None and time.time() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.05)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, stderr[-2000:]
    message = stderr.strip().splitlines()[-1]
    assert message.startswith(f"stopped by {signal.Signals(signum).name} after step") and "Traceback" not in stderr
    stopped_at = int(message.split("after step ")[1].split(";")[0])
    assert 2 <= stopped_at < 40 and saved_steps(interrupted) == [stopped_at]
    code, stdout, stderr = train_cli(interrupted, *run)
    assert code == 0, stderr[-2000:]
    assert f"resuming from step {stopped_at}" in stdout
    straight.communicate(timeout=300)
    assert straight.returncode == 0
    for a, b in zip(jax.tree.leaves(final_params(tmp_path / "straight")), jax.tree.leaves(final_params(interrupted))):
        np.testing.assert_array_equal(a, b)


def test_the_lr_follows_the_decay_period_held_in_the_optimizer_state():
    """The schedule's period is a value in the state: the same jitted update drops the lr after 2 steps once
    `with_decay_every` set it to 2 (plain SGD here, so each update is −lr × gradient)."""
    from vdsr_jax.optim import make_optimizer, with_decay_every

    config = demo.get_config()
    config.optimizer.update(momentum=0.0, weight_decay=0.0, clipping="global_norm", clip_norm=1e9)
    tx = make_optimizer(config, steps_per_epoch=1000)
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.ones(3)}
    update = jax.jit(tx.update)
    state = with_decay_every(tx.init(params), 2)
    steps = []
    for _ in range(5):
        updates, state = update(grads, state, params)
        steps.append(float(updates["w"][0]))
    np.testing.assert_allclose(steps, [-0.1, -0.1, -0.01, -0.01, -0.001], rtol=1e-6)


# A run scaled to its budget: the config's 100 000 steps with lr ÷10 every 25 000 (drops at ¼, ½, ¾).
BUDGET_RUN = ["--config.num_steps=100000", "--config.steps_per_epoch=25000", "--config.log_every_steps=100",
              "--config.eval_every_steps=100000", "--config.checkpoint_every_steps=100000"]
# Outside the budget's clock: Python's start and importing jax before `vdsr_jax.train.main` runs, and the exit
# (JAX and orbax shutting down): 3-4 s measured on this 2-core machine when idle, ×4 for a loaded one.
STARTUP_AND_EXIT_S = 15


def budget_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("budget reached after step")]


def lr_rows(workdir) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["lr"] for row in rows if "lr" in row}


def assert_schedule(lrs: dict[int, float], decay_every: int) -> None:
    """Every logged lr is 0.1 · 0.1^((step − 1) // decay_every): the drops at the plan's steps."""
    for step, lr in lrs.items():
        assert lr == pytest.approx(0.1 * 0.1 ** ((step - 1) // decay_every), rel=1e-6), step


@pytest.mark.slow
def test_a_budget_ends_the_run_on_time_with_the_schedule_scaled_to_the_planned_steps(tmp_path):
    budget_s = 45
    start = time.time()
    code, stdout, stderr = train_cli(tmp_path, *BUDGET_RUN, f"--config.time_budget_minutes={budget_s / 60}")
    wall = time.time() - start
    assert code == 0, stderr[-2000:]
    assert 0.5 * budget_s <= wall <= budget_s + STARTUP_AND_EXIT_S  # on time, and most of the budget used
    plan = json.loads((tmp_path / "plan.json").read_text())
    total, decay_every = plan["total_steps"], plan["decay_every_steps"]
    assert plan["planned_at_step"] < total < 100000 and decay_every == round(25000 * total / 100000)
    (line,) = budget_lines(stdout)
    last = int(line.split()[4].rstrip(";"))
    assert 2 * decay_every < last <= total
    assert saved_steps(tmp_path)[-1] == last  # checkpointed at the end
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "psnr/skimage_held_out_x2" in r][-1] == last  # evaluated at the end
    assert (tmp_path / "images" / "compare_0_x2.png").is_file()
    lrs = lr_rows(tmp_path)
    assert_schedule(lrs, decay_every)
    assert {round(lr, 6) for lr in lrs.values()} >= {0.1, 0.01, 0.001}
    # every file a run writes is one `convert --overwrite` knows as a workdir's (it replaces nothing else)
    assert {p.name for p in tmp_path.iterdir()} <= checkpoint.WORKDIR_ENTRIES
    checkpoint.check_replaceable(tmp_path)


@pytest.mark.slow
def test_a_resumed_budget_run_keeps_its_plan(tmp_path):
    """SIGTERM after the plan; the resume (with a budget again) keeps plan.json's steps and schedule and goes
    on to the planned step, or stops at its own budget saying so."""
    run = [*BUDGET_RUN, "--config.time_budget_minutes=0.5"]
    process = train_cli(tmp_path, *run, wait=False)
    deadline = time.time() + 120
    plan_file, metrics = tmp_path / "plan.json", tmp_path / "metrics.jsonl"
    while not plan_file.exists() or max(lr_rows(tmp_path), default=0) < (
            json.loads(plan_file.read_text())["total_steps"] // 3):
        assert process.poll() is None and time.time() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    plan_text = plan_file.read_text()
    plan = json.loads(plan_text)
    stopped_at = saved_steps(tmp_path)[-1]
    assert stopped_at < plan["total_steps"]

    code, stdout, stderr = train_cli(tmp_path, *run)
    assert code == 0, stderr[-2000:]
    assert f"resuming from step {stopped_at}" in stdout and "keeping this run's plan" in stdout
    assert plan_file.read_text() == plan_text
    (line,) = budget_lines(stdout)
    last = int(line.split()[4].rstrip(";"))
    assert last == plan["total_steps"] or (
        stopped_at < last < plan["total_steps"] and f"continue to the planned step {plan['total_steps']}" in line)
    assert saved_steps(tmp_path)[-1] == last
    lrs = lr_rows(tmp_path)
    assert min(lrs) < stopped_at < max(lrs) == last  # rows of both runs
    assert_schedule(lrs, plan["decay_every_steps"])
