"""A wall-clock budget for training (`config.time_budget_minutes`): how many steps fit, and the learning-rate
schedule scaled to them.

The plan is made once, early in the run, from measurements of this run on this machine: the step time
(steps timed after the first, compiled one, for at least `PROBE_SECONDS`), then one rehearsal of the end of
the run at that step (evaluation, comparison images, checkpoint), timed. The steps that fit are those whose
time, plus the evaluations and checkpoints due among them, plus the rehearsal's time again (with a margin),
ends before the deadline. The config's own run (its "recipe": `num_steps` or `num_epochs · steps_per_epoch`
steps, lr ÷`decay_factor` every `steps_per_epoch · decay_every_epochs`) is shortened to them with the same
shape: decay_every = round(recipe_decay_every · planned / recipe_steps), so each drop comes at the same
fraction of the run (within half a step per drop). Steps run before the plan are at the base lr, which every
such schedule starts with (the first drop is never placed before them). A recipe that fits is run as it is.

The plan is written to `workdir/plan.json` and kept by a resumed run (with or without a budget), which
continues to the planned step count. A run that finds the time left too short for its plan (a resume with a
smaller budget, or steps that became slower: checked at every logging step) stops earlier at the budget,
evaluated and checkpointed, and a further run continues. Several processes: process 0 measures and decides,
and the others take its numbers (`broadcast_one_to_all`), so every process plans and stops at the same step.
"""
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from vdsr_jax.errors import ConfigError
from vdsr_jax.media import atomic_output

PLAN_FILE = "plan.json"
PROBE_SECONDS = 2.0  # the step time is measured over at least this long (after the compiled first step)
MIN_PLANNED_STEPS = 20  # fewer steps left than this: the run goes on as planned, without probing
MARGIN = 0.9  # of the time left that the planned steps may use; the later checks allow all of it
NO_DECAY = 2**31 - 1  # decay_every while the probe runs: the base lr


def check_config(config) -> None:
    """ConfigError unless `config.time_budget_minutes` is a number ≥ 0 (0: no budget)."""
    minutes = config.time_budget_minutes
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 <= minutes < math.inf:
        raise ConfigError(f"config.time_budget_minutes must be a number of minutes ≥ 0 (0: none), not {minutes!r}")


class Plan(NamedTuple):
    total_steps: int
    decay_every_steps: int


def agree(values: list[float], dtype=np.float32) -> list:
    """Process 0's `values` in every process (a no-op with one process), sent as `dtype`: int32 for step
    counts, which float32 holds exactly only up to 2^24."""
    from jax.experimental import multihost_utils

    cast = int if np.issubdtype(dtype, np.integer) else float
    return [cast(v) for v in multihost_utils.broadcast_one_to_all(np.asarray(values, dtype))]


def load_plan(workdir: Path) -> Plan | None:
    """The plan kept in `workdir/plan.json` (process 0's, in every process), or None."""
    path = Path(workdir) / PLAN_FILE
    saved = json.loads(path.read_text()) if jax.process_index() == 0 and path.is_file() else None
    found, total, decay = agree([saved is not None, *(
        (saved["total_steps"], saved["decay_every_steps"]) if saved else (0, 0))], np.int32)
    return Plan(int(total), int(decay)) if found else None


def scaled(recipe: Plan, steps: int, done: int) -> Plan:
    """`recipe` shortened to `steps` (≥ 1) steps with the lr drops at the same fractions; the first drop no
    earlier than step `done` (the steps already run at the base lr)."""
    if steps >= recipe.total_steps:
        return recipe
    decay = round(recipe.decay_every_steps * steps / recipe.total_steps)
    return Plan(steps, max(decay, done, 1))


class Budget:
    """The budget of one run: `minutes` from `started` (time.time()).

    The training loop calls `probe(step, loss)` after every step until it returns True (the step time is
    measured: rehearse the end of the run at this step), then `plan(...)` with the rehearsal's seconds, then
    `recheck(...)` at logging steps. Call them at the same steps in every process.
    """

    def __init__(self, minutes: float, started: float, eval_every: int, checkpoint_every: int):
        self.minutes, self.deadline = minutes, started + 60 * minutes
        self.eval_every, self.checkpoint_every = eval_every, checkpoint_every
        self.first_step = self.first_time = None
        self.step_seconds = self.finish_seconds = None

    def probe(self, step: int, loss) -> bool:
        """Waits for the device at the first step and at 1, 2, 4, 8, … steps after it (few waits where steps
        are fast, an early answer where they are slow); True once the steps after the first have taken
        PROBE_SECONDS (process 0's clock)."""
        if self.first_step is None:
            jax.block_until_ready(loss)
            self.first_step, self.first_time = step, time.perf_counter()
            return False
        steps = step - self.first_step
        if steps & (steps - 1):  # not a power of two
            return False
        jax.block_until_ready(loss)
        elapsed = time.perf_counter() - self.first_time
        done, seconds = agree([elapsed >= PROBE_SECONDS, elapsed / (step - self.first_step)])
        if done:
            self.step_seconds = seconds
        return bool(done)

    def steps_that_fit(self, step_seconds: float, margin: float = 1.0) -> int:
        """Steps that fit in `margin` × the time left, each costing `step_seconds` plus its share of the
        evaluations and checkpoints, after reserving the end of the run (1.5 × the rehearsal's time)."""
        left = margin * (self.deadline - time.time()) - 1.5 * self.finish_seconds
        per_step = step_seconds + self.finish_seconds * (1 / self.eval_every + 1 / self.checkpoint_every)
        return max(0, math.floor(left / per_step))

    def plan(self, step: int, finish_seconds: float, recipe: Plan, kept: Plan | None) -> tuple[Plan, int]:
        """(the run's plan, the step to stop at) after the rehearsal at `step` took `finish_seconds`: `kept`
        (a resumed run's) or `recipe` scaled to the steps that fit; the stop step is the plan's last one if
        it fits, else the last that does."""
        (self.finish_seconds,) = agree([finish_seconds])
        last = step + self.steps_that_fit(self.step_seconds, MARGIN)
        plan = kept or scaled(recipe, max(last, step), step)
        return plan, min(plan.total_steps, max(last, step))

    def recheck(self, step: int, stop_step: int, step_seconds: float) -> int:
        """The stop step lowered where the recent `step_seconds` leave too little time for it."""
        (step_seconds,) = agree([max(step_seconds, self.step_seconds)])
        return min(stop_step, step + self.steps_that_fit(step_seconds))


def write_plan(workdir: Path, plan: Plan, recipe: Plan, budget: Budget, at_step: int) -> None:
    """`workdir/plan.json` (process 0, atomically): the plan, the recipe and the measurements behind it."""
    if jax.process_index():
        return
    record = {**plan._asdict(), "recipe_total_steps": recipe.total_steps,
              "recipe_decay_every_steps": recipe.decay_every_steps, "planned_at_step": at_step,
              "step_seconds": budget.step_seconds, "finish_seconds": budget.finish_seconds,
              "budget_minutes": budget.minutes}
    with atomic_output(Path(workdir) / PLAN_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
