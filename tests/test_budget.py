"""vdsr_jax.budget in one process: the schedule scaled to the steps that fit, the steps that fit in the time
left, the plan and its later checks, plan.json. The clock is the test's (time.time() in the module replaced),
the measurements are set directly, and every expected number is worked out by hand in the test."""
import json
from types import SimpleNamespace

import pytest

from vdsr_jax import budget as budgets
from vdsr_jax.budget import Budget, Plan

STARTED = 1000.0  # time.time() when the run started
# Values exact in float32: the budget passes its measurements between processes as float32.
STEP_S, FINISH_S = 0.5, 4.0
# eval and checkpoint every 8 steps: each step costs 0.5 s + 4 s × (1/8 + 1/8) = 1.5 s
PER_STEP_S = 1.5


@pytest.fixture
def clock(monkeypatch):
    """The budget module's time.time(): `clock.now`, set by the test."""
    clock = SimpleNamespace(now=STARTED)
    monkeypatch.setattr(budgets, "time", SimpleNamespace(time=lambda: clock.now))
    return clock


def measured(minutes=60.0, eval_every=8, checkpoint_every=8) -> Budget:
    budget = Budget(minutes, STARTED, eval_every, checkpoint_every)
    budget.step_seconds, budget.finish_seconds = STEP_S, FINISH_S
    return budget


# ---- scaled -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1000, 1001, 10**6])
def test_a_recipe_that_fits_is_run_as_it_is(steps):
    assert budgets.scaled(Plan(1000, 250), steps, done=600) == Plan(1000, 250)


@pytest.mark.parametrize("recipe, steps, done, expected", [
    # 100 000 steps, lr drops every 25 000 (at ¼, ½, ¾) → 4000 steps, drops every 1000 (still at ¼, ½, ¾)
    (Plan(100_000, 25_000), 4000, 0, Plan(4000, 1000)),
    (Plan(100_000, 25_000), 4001, 0, Plan(4001, 1000)),  # 1000.25 rounds down
    (Plan(100_000, 25_000), 4003, 0, Plan(4003, 1001)),  # 1000.75 rounds up
    (Plan(90, 30), 10, 0, Plan(10, 3)),  # 30 × 10 / 90 = 3.33
    (Plan(100, 10), 3, 0, Plan(3, 1)),  # 10 × 3 / 100 = 0.3: a drop every step, not every 0 steps
], ids=["quarters", "rounds-down", "rounds-up", "thirds", "at-least-one"])
def test_the_schedule_is_scaled_to_keep_the_drops_at_the_same_fractions(recipe, steps, done, expected):
    assert budgets.scaled(recipe, steps, done) == expected


@pytest.mark.parametrize("done, decay", [(999, 1000), (1000, 1000), (1500, 1500), (3999, 3999)])
def test_the_first_drop_is_never_before_the_steps_already_run(done, decay):
    # scaled, the first drop would be at step 1000 (100 000 → 4000 steps, every 25 000 → every 1000)
    assert budgets.scaled(Plan(100_000, 25_000), 4000, done) == Plan(4000, decay)


# ---- steps_that_fit ---------------------------------------------------------------------------------------

def test_steps_that_fit_against_a_hand_computation(clock):
    budget = Budget(10, STARTED, eval_every=100, checkpoint_every=50)  # deadline: 1000 s + 600 s = 1600 s
    budget.finish_seconds = 4.0
    clock.now = STARTED + 120  # 480 s left
    # 0.9 × 480 s − 1.5 × 4 s = 426 s for steps of 0.5 s + 4 s/100 + 4 s/50 = 0.62 s: 687.1 steps
    assert budget.steps_that_fit(0.5, margin=0.9) == 687
    # all of the 480 s: 474 s / 0.62 s = 764.5 steps
    assert budget.steps_that_fit(0.5) == 764


@pytest.mark.parametrize("left_s, steps", [(156.0, 100), (155.9, 99), (7.5, 1), (7.4, 0), (6.0, 0), (1.0, 0),
                                           (-30.0, 0)])
def test_steps_that_fit_counts_whole_steps_and_never_below_zero(clock, left_s, steps):
    budget = measured(minutes=10)
    clock.now = budget.deadline - left_s
    # (left_s − 1.5 × 4 s) / 1.5 s per step, rounded down, none once the reserve for the end is not there
    assert budget.steps_that_fit(STEP_S) == steps


# ---- plan and recheck -------------------------------------------------------------------------------------

def planned(clock, recipe, kept=None, step=32, left_s=1000.0):
    """Budget.plan after the rehearsal at `step`, with `left_s` seconds left: 0.9 × 1000 s − 6 s = 894 s,
    596 steps of 1.5 s, so the last step that fits is 32 + 596 = 628."""
    budget = measured()
    budget.finish_seconds = None  # plan() sets it from the rehearsal's time
    clock.now = budget.deadline - left_s
    return budget, budget.plan(step, FINISH_S, recipe, kept)


def test_a_new_plan_is_the_recipe_scaled_to_the_steps_that_fit(clock):
    budget, (plan, stop) = planned(clock, Plan(100_000, 25_000))
    assert budget.finish_seconds == FINISH_S
    assert plan == Plan(628, 157)  # 25 000 × 628 / 100 000 = 157
    assert stop == 628


def test_a_plan_whose_first_drop_would_come_before_the_rehearsal_starts_it_there(clock):
    _, (plan, stop) = planned(clock, Plan(100_000, 1000))  # 1000 × 628 / 100 000 = 6.28, before step 32
    assert (plan, stop) == (Plan(628, 32), 628)


def test_a_recipe_that_fits_is_planned_as_it_is(clock):
    _, (plan, stop) = planned(clock, Plan(500, 100))
    assert (plan, stop) == (Plan(500, 100), 500)


def test_a_budget_already_spent_stops_at_the_rehearsal(clock):
    _, (plan, stop) = planned(clock, Plan(100_000, 25_000), left_s=5.0)
    assert (plan, stop) == (Plan(32, 32), 32)  # 25 000 × 32 / 100 000 = 8, raised to the 32 steps run


@pytest.mark.parametrize("kept, stop", [(Plan(2000, 500), 628), (Plan(400, 100), 400)], ids=["too-long", "fits"])
def test_a_kept_plan_is_kept_and_stops_at_the_last_step_that_fits(clock, kept, stop):
    assert planned(clock, Plan(100_000, 25_000), kept)[1] == (kept, stop)


@pytest.mark.parametrize("step_s, left_s, stop", [
    (1.0, 406.0, 500),  # slower: (406 s − 6 s) / (1 s + 1 s) = 200 steps from step 300
    (0.5, 406.0, 566),  # as measured: 400 s / 1.5 s = 266.7 steps
    (0.25, 406.0, 566),  # faster than measured: still counted at the measured 0.5 s
    (1.0, 10_000.0, 628),  # slower but the plan's end still fits: never raised
    (0.5, 3.0, 300),  # no time left: stop now
])
def test_recheck_lowers_the_stop_step_when_steps_get_slower_and_never_raises_it(clock, step_s, left_s, stop):
    budget = measured()
    clock.now = budget.deadline - left_s
    assert budget.recheck(300, 628, step_s) == stop


# ---- plan.json --------------------------------------------------------------------------------------------

def test_write_plan_and_load_plan_round_trip(tmp_path):
    assert budgets.load_plan(tmp_path) is None
    budget = measured(minutes=2.5)
    budgets.write_plan(tmp_path, Plan(628, 157), Plan(100_000, 25_000), budget, at_step=32)
    loaded = budgets.load_plan(tmp_path)
    assert loaded == Plan(628, 157) and all(type(v) is int for v in loaded)
    assert json.loads((tmp_path / "plan.json").read_text()) == {
        "total_steps": 628, "decay_every_steps": 157, "recipe_total_steps": 100_000,
        "recipe_decay_every_steps": 25_000, "planned_at_step": 32, "step_seconds": 0.5, "finish_seconds": 4.0,
        "budget_minutes": 2.5}


def test_write_plan_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "plan.json").write_text('{"total_steps": 1, "decay_every_steps": 1, "older": "x" }\n')
    budgets.write_plan(tmp_path, Plan(700, 175), Plan(100_000, 25_000), measured(), at_step=40)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]
    assert "older" not in json.loads((tmp_path / "plan.json").read_text())
    assert budgets.load_plan(tmp_path) == Plan(700, 175)


def test_a_plan_over_2_to_the_24_steps_round_trips(tmp_path):
    """Step counts cross processes as int32: float32 would read 2**24 + 1 back as 2**24."""
    budgets.write_plan(tmp_path, Plan(2**24 + 1, 2**22 + 1), Plan(2**25, 2**23), measured(), at_step=32)
    assert budgets.load_plan(tmp_path) == Plan(2**24 + 1, 2**22 + 1)
