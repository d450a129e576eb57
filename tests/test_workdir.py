"""Training workdirs (vdsr_jax.workdir and its use in training): a config of another model or recipe, or a
damaged newest checkpoint, is refused in one line, and the workdir stays byte for byte as it was; a longer
run resumes; in a multi-process run process 0 alone holds the workdir (the lock itself: test_ownership)."""
import json
import shutil
from pathlib import Path

import jax
import pytest
from conftest import assert_one_error_line, damage, saved_steps, train_cli

from vdsr_jax import checkpoint, training, workdir
from vdsr_jax.configs import demo
from vdsr_jax.errors import CheckpointError, ConfigError, OutputInUse
from vdsr_jax.ownership import LOCK_FILE
from vdsr_jax.model import model_from_config
from vdsr_jax.optim import make_optimizer
from vdsr_jax.train_step import create_train_state
from vdsr_jax.training import resolved, train_and_evaluate


def tiny_config(**changes):
    """demo at conftest.TINY's toy size, with `changes` ({'model.depth': 10, …}) applied as overrides are."""
    config = demo.get_config()
    config.model.depth, config.model.features, config.patch_size, config.batch_size = 3, 8, 17, 4
    config.train_data, config.eval_sets = "skimage:coins,text", {"skimage_held_out": "skimage:camera"}
    for name, value in changes.items():
        *parents, field = name.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[field] = value
    return config


@pytest.fixture(scope="module")
def run_workdir(tmp_path_factory) -> Path:
    """A workdir as a run of tiny_config() leaves it at step 2: its checkpoint and config.json, written by the
    functions the run writes them with."""
    folder = tmp_path_factory.mktemp("run")
    config = tiny_config()
    model = model_from_config(config)
    state = create_train_state(model, make_optimizer(config, 10), jax.random.key(0)).replace(step=2)
    manager = checkpoint.training_manager(folder / workdir.CHECKPOINTS, 3)
    checkpoint.save_training(manager, state, model, jax.random.key(1))
    manager.close()
    (folder / workdir.CONFIG_FILE).write_text(resolved(config).to_json_best_effort(indent=2))
    return folder


@pytest.fixture
def copied(run_workdir, tmp_path) -> Path:
    return Path(shutil.copytree(run_workdir, tmp_path / "run"))


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but the lock (which a refused run takes too), with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


@pytest.fixture
def no_work(monkeypatch):
    """Training that fails the test if it loads any data (the first work a run does)."""
    monkeypatch.setattr(training, "training_data", lambda *args: pytest.fail("the run went on to load data"))


@pytest.mark.parametrize("changes, there, here", [
    ({"model.depth": 10}, "model.depth=3", "model.depth=10"),
    ({"model.features": 16}, "model.features=8", "model.features=16"),
    ({"model.compute_dtype": "bfloat16"}, 'model.compute_dtype="float32"', 'model.compute_dtype="bfloat16"'),
    ({"optimizer.learning_rate": 0.01}, "optimizer.learning_rate=0.1", "optimizer.learning_rate=0.01"),
    ({"batch_size": 8}, "batch_size=4", "batch_size=8"),  # and loss_scale, which follows it
    ({"scales": (2, 3)}, "scales=[2]", "scales=[2, 3]"),
    ({"seed": 7}, "seed=0", "seed=7"),
])
def test_a_config_of_another_model_or_recipe_is_refused_before_any_work_leaving_the_workdir_as_it_was(
        copied, no_work, changes, there, here):
    before = files(copied)
    with pytest.raises(ConfigError) as refusal:
        train_and_evaluate(tiny_config(**changes), copied)
    message = str(refusal.value)
    assert "\n" not in message and f"holds a run with {there}" in message and f"this config has {here}" in message
    assert "(checkpoint step 2)" in message and "another --workdir" in message
    assert files(copied) == before


@pytest.mark.parametrize("changes", [
    {"num_steps": 600}, {"num_epochs": 3, "num_steps": 0}, {"eval_every_steps": 7, "log_every_steps": 3},
    {"keep_checkpoints": 1, "checkpoint_every_steps": 5}, {"time_budget_minutes": 2.5},
    {"eval_sets": {"other": "skimage:clock"}, "eval_scales": (3,)}, {"comparison_images": 0},
    {"data_dir": "/elsewhere", "train_manual_dir": "/elsewhere/too", "data.workers": 3},
    {"data.device_budget_mib": 64.0},  # in the exact mode a limit, not the data
])
def test_fields_that_do_not_change_what_the_steps_compute_may_change_on_resume(run_workdir, changes):
    workdir.check_same_run(resolved(tiny_config(**changes)), run_workdir)


def test_without_config_json_the_checkpoints_model_still_decides(copied):
    (copied / workdir.CONFIG_FILE).unlink()
    with pytest.raises(ConfigError, match="model.depth=3 .*this config has model.depth=20"):
        workdir.check_same_run(resolved(tiny_config(**{"model.depth": 20})), copied)
    workdir.check_same_run(resolved(tiny_config(**{"optimizer.learning_rate": 0.5})), copied)


def test_a_damaged_config_json_or_model_description_is_refused_in_one_line(copied):
    (copied / workdir.CONFIG_FILE).write_text('{"seed": 0, "model": {')
    with pytest.raises(ConfigError, match="config.json cannot be read"):
        workdir.check_same_run(resolved(tiny_config()), copied)
    (copied / workdir.CONFIG_FILE).unlink()
    (copied / workdir.CHECKPOINTS / "2" / checkpoint.MODEL / "metadata").write_text("[1, 2")
    with pytest.raises(CheckpointError, match="cannot read the model description of checkpoint step 2"):
        workdir.check_same_run(resolved(tiny_config()), copied)


def test_a_damaged_newest_checkpoint_stops_the_run_and_changes_nothing(copied):
    """Not a start from step 0 over it (or from an older step, which would reach the damaged one again)."""
    damage(copied / workdir.CHECKPOINTS / "2")
    before = files(copied)
    with pytest.raises(CheckpointError, match="checkpoint step 2 in .* cannot be read .*nothing was changed: start "
                                              "a new run with another --workdir"):
        train_and_evaluate(tiny_config(), copied)
    assert files(copied) == before


def test_only_process_0_holds_the_workdir_and_the_others_follow_its_answer(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(training.jax, "process_index", lambda: 1)
    monkeypatch.setattr(training.budgets, "agree", lambda values, dtype: asked.append(values) or [answer])
    answer = 1  # process 0 was refused
    with pytest.raises(OutputInUse, match="process 0 was refused"), training._owned(tmp_path):
        pytest.fail("process 1 went on")
    answer = 0
    with training._owned(tmp_path):
        assert not (tmp_path / LOCK_FILE).exists()  # process 1 takes no lock
    assert asked == [[False], [False]]


@pytest.mark.slow
def test_on_the_command_line_another_depth_is_one_line_and_a_longer_run_resumes(tmp_path):
    """The case as a user meets it: a run; the same command with another depth (refused, the run's files
    unchanged, even with keep_checkpoints=1); then with more steps (resumed)."""
    run = tmp_path / "run"
    steps = ["--config.checkpoint_every_steps=2", "--config.eval_every_steps=2"]
    code, _, stderr = train_cli(run, "--config.num_steps=2", *steps)
    assert code == 0, stderr[-2000:]
    before = files(run)
    code, stdout, stderr = train_cli(run, "--config.num_steps=2", *steps, "--config.model.depth=10",
                                     "--config.keep_checkpoints=1")
    assert_one_error_line(code, stderr.strip().splitlines(), "model.depth=3", "this config has model.depth=10")
    assert stdout == "" and files(run) == before

    code, stdout, stderr = train_cli(run, "--config.num_steps=4", *steps)
    assert code == 0, stderr[-2000:]
    assert "resuming from step 2" in stdout and saved_steps(run) == [2, 4]
    assert json.loads((run / workdir.CONFIG_FILE).read_text())["num_steps"] == 4

