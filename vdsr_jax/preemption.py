"""Stopping a run cleanly: Ctrl-C (SIGINT) or a preemption notice (SIGTERM, as Colab, preemptible TPU and
cloud VMs and SLURM send) saves a checkpoint at the next step boundary, then the run exits.

One process: a signal handler sets a flag that the training loop reads after every step (no device sync).
Several processes: JAX's preemption service (`jax.distributed`, on by default) receives SIGTERM in any
process, agrees with the others on one step, and `multihost_utils.reached_preemption_sync_point(step)`
turns True at that step in every process, so all of them save the same checkpoint. A Ctrl-C there is
forwarded to the service as SIGTERM. A second Ctrl-C stops at once (KeyboardInterrupt), without saving.
"""
import os
import signal
import threading

import jax

from vdsr_jax.errors import TrainingStopped


class StopRequest:
    """Context manager around the training loop; `reached(step)` says whether to save and stop after `step`.

    Installs its handlers only in the main thread (Python's rule) and puts the previous ones back on exit.
    """

    def __init__(self):
        self.signal_name: str | None = None
        self.multi_process = jax.process_count() > 1
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            # Several processes: JAX's own SIGTERM handler (its preemption notifier) must stay in place.
            signals = [signal.SIGINT] if self.multi_process else [signal.SIGINT, signal.SIGTERM]
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
        if self.multi_process:
            os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier, which tells every process

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

    def stopped(self, step: int, where) -> TrainingStopped:
        """The exception that ends the command once the checkpoint of `step` is saved."""
        signum = signal.Signals[self.signal_name]
        return TrainingStopped(f"stopped by {self.signal_name} after step {step}; checkpoint saved in {where}. "
                               "Run the same command again to resume.", exit_status=128 + int(signum))
