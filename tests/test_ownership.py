"""One process writes an output folder at a time (vdsr_jax.ownership): a second training run, or a conversion
replacing the folder, is refused in one line naming the holder, and nothing of the holder's is touched; a
holder killed with SIGKILL leaves no lock behind."""
import os
import signal
import socket
import sys

import jax
import pytest
from conftest import ROOT, assert_one_error_line, spawn, train_cli

from vdsr_jax import checkpoint, training
from vdsr_jax.configs import demo
from vdsr_jax.errors import OutputInUse
from vdsr_jax.model import VDSR
from vdsr_jax.ownership import LOCK_FILE, hold
from vdsr_jax.training import train_and_evaluate

HOLDER = ("import sys, time\nfrom vdsr_jax.ownership import hold\nwith hold(sys.argv[1]):\n"
          "    print('held', flush=True)\n    time.sleep(600)\n")


def held_by_another_process(folder):
    """A process that owns `folder` (`hold`) until it is killed."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    holder = spawn([sys.executable, "-c", HOLDER, str(folder)], cwd=ROOT, env={**os.environ, "PYTHONPATH": path})
    assert holder.stdout.readline() == "held\n", holder.stderr.read()
    return holder


def files(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != LOCK_FILE}


def test_a_second_holder_is_refused_naming_the_first_until_it_lets_go(tmp_path):
    """Each `hold` opens the lock file anew, and flock locks belong to the open file, as another process's
    would."""
    with hold(tmp_path):
        with pytest.raises(OutputInUse, match=f"in use by another run \\(pid {os.getpid()} on "):
            with hold(tmp_path):
                pytest.fail("held twice")
    with hold(tmp_path):
        pass


@pytest.mark.slow
def test_a_second_run_or_a_replacing_conversion_is_refused_and_a_killed_holder_leaves_no_lock(
        tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    holder = held_by_another_process(run)
    holding = f"pid {holder.pid} on {socket.gethostname()}"
    monkeypatch.setattr(training, "training_data", lambda *args: pytest.fail("the run went on to load data"))
    with pytest.raises(OutputInUse, match=f"{run} is in use by another run \\({holding}\\)"):
        train_and_evaluate(demo.get_config(), run)
    code, stdout, stderr = train_cli(run, "--config.num_steps=2")  # the command as a user runs it
    assert_one_error_line(code, stderr.strip().splitlines(), f"error: {run} is in use", holding)
    model = VDSR(depth=2, features=4)
    params = model.init(jax.random.key(0), jax.numpy.zeros((1, 3, 3, 1)))["params"]
    with pytest.raises(OutputInUse, match=holding):  # vdsr-convert --out run --overwrite
        checkpoint.save_model(run, params, model, overwrite=True)
    assert files(run) == {"metrics.jsonl": b'{"step": 1}\n'} and sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    monkeypatch.setattr(training, "_train", lambda config, folder, started: "trained")
    assert train_and_evaluate(demo.get_config(), run) == "trained"
    assert (run / LOCK_FILE).read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
    assert train_and_evaluate(demo.get_config(), run) == "trained"  # released when the run ended
