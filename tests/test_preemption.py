"""StopRequest: a signal stops a run that waits for results that never come, after its grace period, with
the exit status a shell gives a process that signal ended; results that do come are returned as they are."""
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdsr_jax.errors import TrainingAbandoned
from vdsr_jax.preemption import StopRequest


def busy(seconds: float):
    """A jitted computation (repeated matrix products) whose result takes about `seconds` to come, calibrated
    here, standing in for a step whose collective waits for a peer (a host callback would run synchronously)."""
    def products(x, n):
        return jax.lax.fori_loop(0, n, lambda i, y: jnp.tanh(y @ x), x)

    run = jax.jit(products)
    x = jnp.eye(256) * 0.5
    run(x, 1).block_until_ready()
    start = time.perf_counter()
    run(x, 200).block_until_ready()
    n = int(200 * seconds / (time.perf_counter() - start))
    return lambda: run(x, n)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_wait_for_results_that_do_not_come(signum):
    slow = busy(6.0)
    stop = StopRequest(grace_s=0.5)
    with stop:
        pending = slow()
        start = time.monotonic()  # before the timer starts: the signal comes at least 0.2 s after it
        threading.Timer(0.2, os.kill, (os.getpid(), signum)).start()
        with pytest.raises(TrainingAbandoned) as stopped:
            stop.wait([pending], step=7)
        waited = time.monotonic() - start
        assert not pending.is_ready()  # it stopped waiting; it did not return the results
    pending.block_until_ready()
    assert stopped.value.exit_status == 128 + int(signum)
    assert f"stopped by {signal.Signals(signum).name}" in str(stopped.value) and "step 7" in str(stopped.value)
    assert 0.2 + 0.5 <= waited < 4  # the signal's time plus the grace period, well before the results
    assert signal.getsignal(signum) is not stop._handle  # the previous handler is back


def test_results_that_come_are_returned_and_no_signal_means_no_stop():
    slow = busy(1.0)
    with StopRequest(grace_s=0.1) as stop:
        pending = slow()  # comes after longer than the grace period: no signal, so no stop
        values = stop.wait([pending, jnp.float32(2.5)], step=1)
        assert not stop.reached(1)
    np.testing.assert_allclose(values[0], np.asarray(pending))
    assert values[1] == 2.5
