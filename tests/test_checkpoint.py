"""Checkpoints (vdsr_jax.checkpoint): model save/load bit for bit, what is refused, training state round
trips and the refusal of an unreadable step. Keeping the last k and the best is in test_train; a damaged
checkpoint in a real run's workdir is in test_workdir (slow)."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import damage
from flax.traverse_util import flatten_dict

from vdsr_jax import checkpoint
from vdsr_jax.configs import demo
from vdsr_jax.errors import CheckpointError, OutputExists
from vdsr_jax.model import VDSR, model_spec
from vdsr_jax.optim import make_optimizer
from vdsr_jax.train_step import create_train_state

MODEL = VDSR(depth=3, features=8)


def random_params(model=MODEL, seed=0):
    """Parameters of `model`'s shapes with values no initialiser would give, so that a restore of fresh
    weights could not pass."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda shape: rng.standard_normal(shape).astype(np.float32),
                        checkpoint.expected_shapes(model), is_leaf=lambda x: isinstance(x, tuple))


def assert_trees_equal(a, b):
    flat_a, flat_b = flatten_dict(jax.tree.map(np.asarray, a)), flatten_dict(jax.tree.map(np.asarray, b))
    assert flat_a.keys() == flat_b.keys()
    for name in flat_a:
        assert flat_a[name].dtype == flat_b[name].dtype, name
        np.testing.assert_array_equal(flat_a[name], flat_b[name], err_msg=str(name))


def test_a_saved_model_loads_bit_for_bit_with_its_architecture(tmp_path):
    params = random_params()
    path = checkpoint.save_model(tmp_path / "ckpt", params, MODEL, step=7)
    assert path == (tmp_path / "ckpt").absolute() and sorted(p.name for p in path.iterdir()) == ["7"]
    model, loaded = checkpoint.load_model(tmp_path / "ckpt")
    assert model_spec(model) == model_spec(MODEL)
    assert_trees_equal(loaded, params)
    assert checkpoint.load_model(tmp_path / "ckpt", step=7)[0] == model
    with pytest.raises(CheckpointError, match=r"has no step 3 \(steps: \[7\]\)"):
        checkpoint.load_model(tmp_path / "ckpt", step=3)
    assert not list(tmp_path.glob(".*"))  # no staging folder left beside it


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_files(target, kind):
    """`target` as a user may have it: a file, a folder of their files, or checkpoints with their files beside."""
    if kind == "file":
        target.write_bytes(b"notes")
    elif kind in ("folder of photos", "folder with a step-like name"):
        (target / ("0" if "step" in kind else "holiday")).mkdir(parents=True)
        (target / ("0" if "step" in kind else "holiday") / "a.jpg").write_bytes(b"a photo")
    else:  # a project folder whose checkpoints/ makes it look like a workdir, or a checkpoint folder + a file
        checkpoint.save_model(target / "checkpoints" if "project" in kind else target, random_params(), MODEL)
        (target / "thesis.tex").write_bytes(b"my thesis")


@pytest.mark.parametrize("kind", ["folder of photos", "folder with a step-like name", "file",
                                  "project with checkpoints/", "checkpoint folder with a file beside"])
def test_overwrite_never_replaces_what_is_not_a_checkpoint(tmp_path, kind):
    """--overwrite replaces a checkpoint folder or a training workdir; a folder holding anything else (even
    a folder named like a step, or checkpoints beside the user's own files) or a file would be deleted by
    the replacement, so it is refused and kept byte for byte."""
    target = tmp_path / "out"
    user_files(target, kind)
    before = snapshot(tmp_path)
    with pytest.raises(OutputExists, match="replaces only a checkpoint folder or a training workdir"):
        checkpoint.save_model(target, random_params(), MODEL, overwrite=True)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_replaces_an_empty_folder_and_a_training_workdir(tmp_path):
    (tmp_path / "empty").mkdir()
    checkpoint.save_model(tmp_path / "empty", random_params(), MODEL, overwrite=True)
    checkpoint.save_model(tmp_path / "run" / "checkpoints", random_params(seed=1), MODEL, step=7)
    checkpoint.save_model(tmp_path / "run", random_params(seed=2), MODEL, overwrite=True)
    assert_trees_equal(checkpoint.load_model(tmp_path / "run")[1], random_params(seed=2))


def test_an_existing_folder_is_kept_unless_overwrite_then_replaced_whole(tmp_path):
    old, new = random_params(seed=1), random_params(seed=2)
    checkpoint.save_model(tmp_path / "ckpt", old, MODEL, step=1)
    with pytest.raises(OutputExists, match="--overwrite"):
        checkpoint.save_model(tmp_path / "ckpt", new, MODEL)
    assert_trees_equal(checkpoint.load_model(tmp_path / "ckpt")[1], old)
    checkpoint.save_model(tmp_path / "ckpt", new, MODEL, step=0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["0"]  # step 1 is gone, not kept beside
    assert_trees_equal(checkpoint.load_model(tmp_path / "ckpt")[1], new)
    assert not list(tmp_path.glob(".*"))


def test_a_folder_written_meanwhile_by_another_process_is_kept_and_refused(tmp_path, monkeypatch):
    """Both found the name free; the other process's folder appears before this one is renamed into place."""
    theirs = checkpoint.save_model(tmp_path / "theirs", random_params(seed=3), MODEL)
    real = checkpoint.refuse_existing

    def then_the_other_finishes(path, overwrite):
        real(path, overwrite)
        shutil.copytree(theirs, path)

    monkeypatch.setattr(checkpoint, "refuse_existing", then_the_other_finishes)
    with pytest.raises(OutputExists, match="ckpt already exists .*--overwrite"):
        checkpoint.save_model(tmp_path / "ckpt", random_params(seed=4), MODEL)
    assert_trees_equal(checkpoint.load_model(tmp_path / "ckpt")[1], random_params(seed=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "theirs"]  # no staging folder left


def test_params_that_do_not_fit_the_model_are_refused_before_writing(tmp_path):
    params = random_params()
    params["conv_0"]["kernel"] = params["conv_0"]["kernel"][..., :4]
    with pytest.raises(CheckpointError, match=r"layer conv_0/kernel has shape \(3, 3, 1, 4\), expected"):
        checkpoint.save_model(tmp_path / "ckpt", params, MODEL)
    with pytest.raises(CheckpointError, match="unexpected layer extra/kernel"):
        checkpoint.save_model(tmp_path / "ckpt", {**random_params(), "extra": {"kernel": np.zeros(1)}}, MODEL)
    assert not (tmp_path / "ckpt").exists()


def test_a_training_workdir_resolves_to_its_checkpoints_and_a_missing_folder_is_named(tmp_path):
    checkpoint.save_model(tmp_path / "run" / "checkpoints", random_params(), MODEL)
    assert checkpoint.resolve(tmp_path / "run") == tmp_path / "run" / "checkpoints"
    assert_trees_equal(checkpoint.load_model(tmp_path / "run")[1], random_params())
    with pytest.raises(CheckpointError, match=f"checkpoint folder {tmp_path / 'absent'} does not exist"):
        checkpoint.load_model(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no vdsr_jax checkpoint"):
        checkpoint.load_model(tmp_path / "empty")


def test_an_unreadable_model_step_is_one_checkpoint_error(tmp_path):
    checkpoint.save_model(tmp_path / "ckpt", random_params(), MODEL, step=2)
    damage(tmp_path / "ckpt" / "2")
    with pytest.raises(CheckpointError, match="cannot read checkpoint step 2 in"):
        checkpoint.load_model(tmp_path / "ckpt")


class Training:
    """A train state after two optimiser updates (momentum and count non-zero) and a data key."""

    def __init__(self, seed):
        tx = make_optimizer(demo.get_config(), steps_per_epoch=10)
        state = create_train_state(MODEL, tx, jax.random.key(seed))
        self.state, self.key = two_updates(state), jax.random.key(100 + seed)


@jax.jit
def two_updates(state):
    for i in range(2):
        state = state.apply_gradients(grads=jax.tree.map(lambda p: jnp.full_like(p, 0.01 * (i + 1)), state.params))
    return state


def test_training_state_round_trips_bit_for_bit_and_a_damaged_step_is_refused(tmp_path):
    first, second = Training(0), Training(1)
    manager = checkpoint.training_manager(tmp_path, keep_last=3)
    checkpoint.save_training(manager, first.state.replace(step=1), MODEL, first.key)
    checkpoint.save_training(manager, second.state.replace(step=2), MODEL, second.key)
    fresh = Training(5)  # the structure to restore into, other values everywhere
    state, key = checkpoint.restore_training(manager, fresh.state, fresh.key)
    assert int(state.step) == 2
    assert_trees_equal(state.params, second.state.params)
    for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(second.state.opt_state)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(second.key))

    damage(tmp_path / "2")
    kept = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    # step 1 is not taken instead: the run would reach step 2 again, which orbax cannot write over
    with pytest.raises(CheckpointError, match="checkpoint step 2 in .* cannot be read .*resume from step 1"):
        checkpoint.restore_training(manager, fresh.state, fresh.key)
    manager.close()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == kept


def test_nothing_to_restore_returns_the_inputs(tmp_path):
    fresh = Training(0)
    manager = checkpoint.training_manager(tmp_path, keep_last=1)
    state, key = checkpoint.restore_training(manager, fresh.state, fresh.key)
    manager.close()
    assert state is fresh.state and key is fresh.key
