"""Stopping a run cleanly: Ctrl-C (SIGINT) or a preemption notice (SIGTERM, as Colab, preemptible TPU and
cloud VMs and SLURM send) saves a checkpoint at the next step boundary, then the run exits.

One process: a signal handler sets a flag that the training loop reads after every step (no device sync).
Several processes: JAX's preemption service (`jax.distributed`, on by default) receives SIGTERM in any
process, agrees with the others on one step, and `multihost_utils.reached_preemption_sync_point(step)`
turns True at that step in every process, so all of them save the same checkpoint. A Ctrl-C there is
passed on to the service as a SIGTERM. A second Ctrl-C stops at once (KeyboardInterrupt), without saving.

A run that waits for results that do not come (a process stuck in a collective whose peer will never join)
still stops: the loop waits through `StopRequest.wait`, which returns to Python every few milliseconds so
that the handlers run, and which gives up `grace_s` after a signal, without saving; the command then exits
at once (`TrainingAbandoned`).
"""
import ctypes
import os
import signal
import threading
import time

import jax

from vdsr_jax.errors import TrainingAbandoned, TrainingStopped

GRACE_S = 60.0  # after a signal, how long a wait for the current step's results may still take
POLL_S = 0.005


def _native_handler(signum: int):
    """The C-level handler now installed for `signum` (JAX's preemption notifier installs one for SIGTERM, and
    neither chains to nor is replaced by Python's), as a callable; None where it cannot be read (no POSIX
    `sigaction`) or is not a function."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        action = ctypes.create_string_buffer(512)  # larger than any platform's struct sigaction
        if libc.sigaction(signum, None, action) != 0:
            return None
    except (OSError, AttributeError):
        return None
    address = ctypes.c_void_p.from_buffer(action).value  # sa_handler is the first member everywhere
    if address in (None, int(signal.SIG_DFL), int(signal.SIG_IGN)):
        return None
    return ctypes.CFUNCTYPE(None, ctypes.c_int)(address)


class StopRequest:
    """Context manager around the training loop; `reached(step)` says whether to save and stop after `step`,
    `wait(tree, step)` fetches results so that a signal still ends the run while it waits.

    Installs its handlers only in the main thread (Python's rule) and puts the previous ones back on exit.
    """

    def __init__(self, grace_s: float = GRACE_S):
        self.signal_name: str | None = None
        self.multi_process = jax.process_count() > 1
        self.grace_s = grace_s
        self._signalled_at: float | None = None
        self._previous = {}
        self._notify_jax = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            signals = [signal.SIGINT, signal.SIGTERM]
            if self.multi_process:
                # Python's handler replaces JAX's preemption notifier, so it calls the notifier itself; where
                # the notifier cannot be reached, SIGTERM stays JAX's alone.
                self._notify_jax = _native_handler(signal.SIGTERM)
                if self._notify_jax is None:
                    signals.remove(signal.SIGTERM)
            for signum in signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal_name = signal.Signals(signum).name
        self._signalled_at = time.monotonic()
        if self._notify_jax is not None:
            self._notify_jax(signal.SIGTERM)  # JAX's preemption notifier, which tells every process
        elif self.multi_process:
            os.kill(os.getpid(), signal.SIGTERM)  # SIGTERM is still JAX's own

    def reached(self, step: int) -> bool:
        """True at the step boundary where this process (and, multi-process, every process) should save
        and stop. Call it after every step, with the same step numbers in every process."""
        if self.multi_process:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self.signal_name = self.signal_name or "SIGTERM"
                return True
            return False
        return self.signal_name is not None

    def wait(self, tree, step: int):
        """`jax.device_get(tree)` once every array in it is ready, checking every few ms for a signal.

        Raises TrainingAbandoned (exit status 128 + the signal) when a signal came `grace_s` ago and the
        results of `step` have still not come: nothing is saved, since the state is not known.
        """
        arrays = [leaf for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)]
        while not all(array.is_ready() for array in arrays):
            if self._signalled_at is not None and time.monotonic() - self._signalled_at > self.grace_s:
                signum = signal.Signals[self.signal_name]
                raise TrainingAbandoned(
                    f"stopped by {self.signal_name}: the results of step {step} did not come within "
                    f"{self.grace_s:g} s of the signal (a process may be waiting for a peer); nothing was saved "
                    "after the last checkpoint", exit_status=128 + int(signum))
            time.sleep(POLL_S)
        return jax.device_get(tree)

    def stopped(self, step: int, where) -> TrainingStopped:
        """The exception that ends the command once the checkpoint of `step` is saved."""
        signum = signal.Signals[self.signal_name]
        return TrainingStopped(f"stopped by {self.signal_name} after step {step}; checkpoint saved in {where}. "
                               "Run the same command again to resume.", exit_status=128 + int(signum))
