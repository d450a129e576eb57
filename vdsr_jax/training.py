"""Training VDSR data-parallel over all devices: `train_and_evaluate(config, workdir)` is the whole job.

A run owns its workdir (`vdsr_jax.ownership`). A run of the same model and recipe (`vdsr_jax.workdir`)
resumes from the newest checkpoint in `workdir/checkpoints` and continues bit for bit as if never stopped:
the data of step t depends only on the checkpointed PRNG key and t. The host does not wait for each step:
losses stay on the device and are read (and checked for being finite) at log, eval and checkpoint steps
only. The command line is `vdsr-train` / `python -m vdsr_jax.train`.
"""
import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from vdsr_jax import budget as budgets, checkpoint, distributed, optim, preemption
from vdsr_jax.color import luminance, quantize
from vdsr_jax.data import SKIMAGE_PREFIX, load_images, patches, pool
from vdsr_jax.data.sources import DIRECT_PREFIXES, FOLDER_PREFIX, check_source, image_store, read_shapes
from vdsr_jax.errors import ConfigError, DataError, OutputInUse, TrainingDiverged, check_integer
from vdsr_jax.inference import TiledVDSR
from vdsr_jax.media import atomic_output, check_writable, write_image
from vdsr_jax.metric_writer import MetricWriter, Reporter
from vdsr_jax.model import model_from_config
from vdsr_jax.optim import learning_rate, make_optimizer, with_decay_every
from vdsr_jax.panels import side_by_side
from vdsr_jax.protocol import evaluate_sets
from vdsr_jax.resize import MAX_SCALE, bicubic_degradation
from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, replicated
from vdsr_jax.ownership import hold
from vdsr_jax.workdir import CHECKPOINTS, CONFIG_FILE, check_same_run


def validate_config(config, device_count: int) -> None:
    """ConfigError naming the first field that cannot work, before any data is loaded or compiled: the data
    and loop fields here, the others by the module that uses them (budget, optim, pool, model)."""
    for name in ("scales", "eval_scales"):
        scales = tuple(config[name])
        if not scales or any(not isinstance(s, int) or not 2 <= s <= MAX_SCALE for s in scales):
            raise ConfigError(f"config.{name} must list integer scales in 2..{MAX_SCALE}, not {scales!r}")
    check_integer("patch_size", config.patch_size, 2)
    check_integer("batch_size", config.batch_size)
    if config.batch_size % device_count:
        raise ConfigError(f"config.batch_size={config.batch_size} is not divisible by the {device_count} devices")
    for name in ("num_epochs", "steps_per_epoch", "num_steps"):
        check_integer(name, config[name], 0)
    if config.num_steps == 0 and config.num_epochs == 0:
        raise ConfigError("config.num_epochs or config.num_steps must be > 0")
    budgets.check_config(config)
    for name in ("eval_every_steps", "checkpoint_every_steps", "keep_checkpoints", "log_every_steps"):
        check_integer(name, config[name])
    if not config.downsizes or any(not 0 < d <= 1 for d in config.downsizes):
        raise ConfigError(f"config.downsizes must be factors in (0, 1], not {tuple(config.downsizes)!r}")
    optim.check_config(config)
    if not config.loss_scale >= 0:
        raise ConfigError(f"config.loss_scale must be ≥ 0 (0: 0.5 / batch_size), not {config.loss_scale!r}")
    data = config.data
    if data.mode not in ("exact", "pool"):
        raise ConfigError(f"config.data.mode must be 'exact' or 'pool', not {data.mode!r}")
    for name in ("device_budget_mib", "host_budget_mib"):
        if not data[name] > 0:
            raise ConfigError(f"config.data.{name} must be > 0, not {data[name]!r}")
    if data.mode == "pool":
        pool.check_config(data, config.patch_size)
    model_from_config(config)
    _check_folders(config)


def loss_scale(config) -> float:
    """The factor of the summed squared error in the loss: `config.loss_scale`, where 0 (the default) means
    0.5 / batch_size, the paper's ½·mean over the batch, so it follows a batch_size set on the command line."""
    return config.loss_scale or 0.5 / config.batch_size


def resolved(config):
    """A copy of `config` with the values that follow others (`loss_scale`) written out, as a run uses them."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.loss_scale = loss_scale(config)
    return config


def _check_folders(config) -> None:
    """ConfigError for a data source that names none (`check_source`) or a data folder (train_manual_dir, a
    `folder:` source, an eval set's) that is not one."""
    sources = [(config.train_data, config.train_manual_dir, "train_manual_dir")]
    sources += [(name, where, f"eval_sets.{name}") for name, where in config.eval_sets.items()]
    for source, where, field in sources:
        spec, named_by = where if where.startswith(DIRECT_PREFIXES) else source, field
        if source.startswith(FOLDER_PREFIX):  # train_data
            where, field = source.removeprefix(FOLDER_PREFIX), "train_data"
        elif where.startswith(FOLDER_PREFIX):  # an eval set
            where = where.removeprefix(FOLDER_PREFIX)
        elif source.startswith(SKIMAGE_PREFIX) or where.startswith(SKIMAGE_PREFIX):
            where = ""
        if where and not Path(where).expanduser().is_dir():
            state = "is a file, not a folder of images" if Path(where).expanduser().exists() else "does not exist"
            raise ConfigError(f"config.{field}: data folder {where} {state}")
        try:
            check_source(spec)
        except DataError as e:
            raise ConfigError(f"config.{'train_data' if named_by == 'train_manual_dir' else named_by}: {e}") from None


MIB = 2**20


class TrainingData(NamedTuple):
    """Where the training batches come from, in either data mode."""

    source_for: Callable[[int], patches.PatchSource]  # step (0-based) -> the pairs on the devices it samples
    catalogue: patches.Catalogue  # the usable variants of the training images
    tile_pool: pool.TilePool | None  # the pool mode's pool (its input report; closed after training)


def training_data(config, mesh, say) -> TrainingData:
    """The training data of `config.data.mode`, replicated over `mesh`; `say(line)` describes it. ConfigError
    for data that gives no patch or exceeds its budget, DataError for missing data."""
    store = image_store(config.train_data, config.data_dir, config.train_manual_dir)
    if config.data.mode == "pool":
        tile_pool, catalogue = open_pool(config, store, replicated(mesh), say)
        return TrainingData(tile_pool.source_for, catalogue, tile_pool)
    source, catalogue = exact_pairs(config, store, replicated(mesh), say)
    return TrainingData(lambda step: source, catalogue, None)


def exact_pairs(config, store, sharding, say):
    """The `exact` mode: (every variant's pairs on the devices, a PatchSource; the Catalogue). ConfigError
    when the images give no patch or their pairs exceed `config.data.device_budget_mib`, checked from the
    image shapes before any pixel is read. Each process reads and prepares only its share of the images."""
    catalogue = catalogue_from_config(config, store)
    need = int((catalogue.heights * catalogue.widths).sum()) * pool.BYTES_PER_PIXEL
    if need > config.data.device_budget_mib * MIB:
        raise ConfigError(f"config.train_data {config.train_data}: the exact mode needs {need / MIB:.0f} MiB on "
                          f"each device, over config.data.device_budget_mib={config.data.device_budget_mib:g}; "
                          "raise it or use config.data.mode='pool'")
    try:
        share = patches.prepare_share(store, catalogue, (jax.process_index(), jax.process_count()))
    except ValueError as e:  # over 2^31 pixels
        raise ConfigError(f"config.train_data {config.train_data}: {e}") from None
    say(f"data: exact mode, {len(store)} images, {need / MIB:.0f} MiB of pairs on each device")
    layout = jax.device_put(share._replace(inputs=None, targets=None), sharding)  # the same in every process
    return layout._replace(inputs=distributed.combine_shares(share.inputs, sharding),
                           targets=distributed.combine_shares(share.targets, sharding)), catalogue


def catalogue_from_config(config, store) -> patches.Catalogue:
    """The usable variants of the training images (shapes read by each process for its share); ConfigError
    when none holds a patch."""
    try:
        return patches.catalogue(read_shapes(store), config.scales, config.downsizes, config.patch_size)
    except ValueError as e:
        raise ConfigError(f"config.train_data {config.train_data}: {e}") from None


def open_pool(config, store, sharding, say):
    """The `pool` mode: (the TilePool, the Catalogue); ConfigError for data that gives no patch or a host
    estimate over `config.data.host_budget_mib`. Reads image headers only, not pixels."""
    catalogue = catalogue_from_config(config, store)
    layout = pool.layout_from_config(config.data, config.patch_size)
    workers = config.data.workers or max(1, (os.cpu_count() or 2) // 2)
    host = pool.host_bytes(layout, catalogue.shapes, workers)
    if host > config.data.host_budget_mib * MIB:
        raise ConfigError(f"config.data.host_budget_mib={config.data.host_budget_mib:g} is below the pool's host "
                          f"estimate of {host / MIB:.0f} MiB ({workers} workers × the largest image, 2 refreshes "
                          "of tiles); raise it, or lower data.workers or data.refresh_tiles")
    say(f"data: pool mode, {len(store)} images, {layout.slots} tiles of {layout.tile}² = "
        f"{layout.device_bytes / MIB:.1f} MiB on each device, {layout.refresh_tiles} replaced every "
        f"{layout.refresh_every} steps; host estimate {host / MIB:.0f} MiB")
    return pool.TilePool(store, catalogue, layout, config.seed, sharding, workers), catalogue


def load_eval_sets(config) -> dict[str, list[np.ndarray]]:
    """name -> HR images of `config.eval_sets` (name -> a builder's manual_dir, `skimage:NAMES` or
    `folder:PATH`)."""
    return {name: load_images(where if where.startswith(DIRECT_PREFIXES) else name, config.data_dir, where)
            for name, where in config.eval_sets.items()}


def evaluate(predict: TiledVDSR, eval_sets: dict, scales) -> dict:
    """PSNR/SSIM under the paper's protocol for every set and scale, keyed `psnr/set5_x2` etc."""
    results = {}
    for row in evaluate_sets(predict, eval_sets, scales, show_progress=False):
        key = f"{row['dataset']}_x{row['scale']}"
        results[f"psnr/{key}"] = row["vdsr_psnr"]
        results[f"ssim/{key}"] = row["vdsr_ssim"]
        results[f"bicubic_psnr/{key}"] = row["bicubic_psnr"]
    return results


def write_comparisons(predict: TiledVDSR, images, scale: int, directory: Path, count: int) -> list[Path]:
    """Labelled bicubic | VDSR | HR luminance panels of the first `count` eval images, as PNG."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for i, image in enumerate(images[:count]):
        bicubic, target = bicubic_degradation(luminance(image), scale)
        panels = [quantize(p, np.uint8)[..., None] for p in (bicubic, predict(bicubic), target)]
        written.append(write_image(directory / f"compare_{i}_x{scale}.png",
                                   side_by_side(panels, ["bicubic", f"VDSR x{scale}", "HR"]), overwrite=True))
    return written


def _check_finite(losses: list, first_step: int, manager, stop: preemption.StopRequest) -> np.ndarray:
    """The losses of steps first_step, … as floats (this waits for them, through `stop`); TrainingDiverged at
    the first that is not finite, naming the last good checkpoint."""
    values = np.asarray(stop.wait(losses, first_step + len(losses) - 1), np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        kept = manager.latest_step()
        raise TrainingDiverged(
            f"the loss became {values[bad[0]]} at step {first_step + int(bad[0])}; stopped. "
            + (f"The last good checkpoint is step {kept} in {manager.directory}." if kept is not None
               else "No checkpoint was written yet."))
    return values


def due(step: int, every: int, last: int) -> bool:
    """Whether a periodic job (logging, evaluation, checkpoint: every `every` steps) runs after `step`: at each
    multiple of `every` and at the run's `last` step."""
    return step % every == 0 or step == last


def train_and_evaluate(config, workdir, started: float | None = None) -> dict:
    """Train per `config`, writing checkpoints, logs, plot and comparison images in `workdir`.

    The run owns `workdir` while it trains (`vdsr_jax.ownership`), and resumes from its newest checkpoint
    where that is of the same model and recipe (`vdsr_jax.workdir`).
    With `config.time_budget_minutes` > 0 the run, its final evaluation, comparison images and checkpoint
    end within that many minutes from `started` (time.time(); default: this call), the steps and the lr
    schedule planned to fit (`vdsr_jax.budget`; the plan kept in `workdir/plan.json` for a resume); reaching
    the budget is a normal end, reported as "budget reached after step N".

    Returns the final eval metrics (`psnr/<set>_x<scale>` …, dB). Before any data is loaded or anything
    compiled: ConfigError for a bad config or one of another model or recipe than the workdir's run,
    OutputInUse where another run owns the workdir, CheckpointError for a newest checkpoint that cannot be
    read (also found later, while restoring). Then DataError for missing data, TrainingDiverged when the loss
    stops being finite.
    """
    started = time.time() if started is None else started
    workdir = Path(workdir).expanduser()
    validate_config(config, jax.device_count())
    check_writable(workdir, folder=True)
    workdir.mkdir(parents=True, exist_ok=True)
    with _owned(workdir):
        check_same_run(resolved(config), workdir)
        return _train(config, workdir, started)


@contextlib.contextmanager
def _owned(workdir: Path):
    """`with _owned(workdir):` process 0 holds `workdir` (`vdsr_jax.ownership.hold`) for all the run's
    processes; every process raises OutputInUse where it could not."""
    with contextlib.ExitStack() as stack:
        refusal = None
        if jax.process_index() == 0:
            try:
                stack.enter_context(hold(workdir))
            except OutputInUse as e:
                refusal = e
        (refused,) = budgets.agree([refusal is not None], np.int32)  # the others would wait for process 0
        if refusal is not None:
            raise refusal
        if refused:
            raise OutputInUse(f"workdir {workdir} is in use by another run (process 0 was refused it)")
        yield


def _train(config, workdir: Path, started: float) -> dict:
    """The run of `train_and_evaluate`, in a workdir it owns."""
    main_process = jax.process_index() == 0
    reporter = Reporter(enabled=main_process)

    mesh = data_mesh()
    eval_sets = load_eval_sets(config)
    data = training_data(config, mesh, reporter.say)
    epoch_patches = patches.patches_per_epoch(data.catalogue, config.patch_size)
    steps_per_epoch = config.steps_per_epoch or math.ceil(epoch_patches / config.batch_size)
    recipe = budgets.Plan(config.num_steps or config.num_epochs * steps_per_epoch,
                          steps_per_epoch * config.optimizer.decay_every_epochs)

    model = model_from_config(config)
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(model, make_optimizer(config, steps_per_epoch), init_key)
    state = jax.device_put(state, replicated(mesh))
    # A global key, as multi-process orbax needs; device_put moves key data, not typed keys, across processes.
    data_key = jax.random.wrap_key_data(jax.device_put(jax.random.key_data(data_key), replicated(mesh)))

    manager = checkpoint.training_manager(workdir / CHECKPOINTS, config.keep_checkpoints)
    state, data_key = checkpoint.restore_training(manager, state, data_key)
    start = int(state.step)
    if main_process:
        with atomic_output(workdir / CONFIG_FILE, overwrite=True) as tmp:
            tmp.write_text(resolved(config).to_json_best_effort(indent=2))
    writer = MetricWriter(workdir, resume_step=start) if main_process else None
    if start:
        reporter.say(f"resuming from step {start} in {workdir / 'checkpoints'}")
    kept = budgets.load_plan(workdir) if start else None
    if kept:
        reporter.say(f"keeping this run's plan ({workdir / budgets.PLAN_FILE}): {kept.total_steps} steps, lr "
                     f"×{config.optimizer.decay_factor:g} every {kept.decay_every_steps}")
    budget = (budgets.Budget(config.time_budget_minutes, started, config.eval_every_steps,
                             config.checkpoint_every_steps) if config.time_budget_minutes else None)
    plan = kept or recipe
    planning = budget is not None and plan.total_steps - start > budgets.MIN_PLANNED_STEPS
    # the steps before a new budget's plan run at the base lr, the plan's schedule (a value in the state) after;
    # a resumed run's kept plan holds from its first step
    decay_every = budgets.NO_DECAY if planning and not kept else plan.decay_every_steps
    state = state.replace(opt_state=with_decay_every(state.opt_state, decay_every))
    stop_step = plan.total_steps

    def lr_at(step):  # of step 1, 2, …
        return learning_rate(step - 1, config.optimizer.learning_rate, decay_every, config.optimizer.decay_factor)

    metrics, comparisons, compared_at = {}, [], None
    train_step = make_sampling_train_step(mesh, config.batch_size, config.patch_size, config.augment,
                                          loss_scale(config))
    window, window_start = [], time.perf_counter()
    pool_notes = set()  # what the pool's rates were reported for, once a run each
    stop = preemption.StopRequest()
    step = start
    try:
        with stop, reporter.progress(stop_step, start) as progress:
            while step < stop_step:
                step += 1
                state, loss = train_step(state, data.source_for(step - 1), data_key)
                window.append(loss)
                progress.update(1)
                rehearsing = planning and budget.probe(step, loss)  # the end of the run, timed, at this step
                stopping = stop.reached(step) and step < stop_step
                logging = due(step, config.log_every_steps, stop_step) or stopping or rehearsing
                evaluating = due(step, config.eval_every_steps, stop_step) or rehearsing
                saving = due(step, config.checkpoint_every_steps, stop_step) or stopping or rehearsing
                if not (logging or evaluating or saving):
                    continue
                losses = _check_finite(window, step - len(window) + 1, manager, stop)
                elapsed = time.perf_counter() - window_start
                rate = len(window) / elapsed
                # full log windows only: a short one (after the rehearsal, a resume) times too few steps
                if budget and not planning and step < stop_step and len(window) >= config.log_every_steps:
                    stop_step = budget.recheck(step, stop_step, 1 / rate)
                    evaluating = saving = evaluating or step == stop_step
                    progress.total = stop_step
                row = {"loss": losses.mean(), "lr": lr_at(step), "steps_per_second": rate,
                       "patches_per_second": rate * config.batch_size}
                if data.tile_pool:
                    row["input_wait_fraction"], period = data.tile_pool.input_report(elapsed, len(window))
                    if step - len(window) > start:  # the first window's time includes compiling the step
                        _report_pool(data.tile_pool, row["input_wait_fraction"], period, pool_notes, reporter)
                if writer:
                    writer.write(step, row)
                progress.set_postfix(loss=f"{losses.mean():.4g}", lr=f"{lr_at(step):.3g}")
                finish_start = time.perf_counter()
                if evaluating:
                    metrics = evaluate(TiledVDSR(model, distributed.local_copy(state.params)), eval_sets,
                                       config.eval_scales)
                    if writer:
                        writer.write(step, metrics)
                        writer.plot()
                if rehearsing and main_process:
                    comparisons = write_comparisons(TiledVDSR(model, distributed.local_copy(state.params)),
                                                    next(iter(eval_sets.values())), config.eval_scales[0],
                                                    workdir / "images", config.comparison_images)
                    compared_at = step
                if saving:
                    psnrs = [v for k, v in metrics.items() if k.startswith("psnr/")]
                    best = {checkpoint.BEST_METRIC: float(np.mean(psnrs))} if evaluating and psnrs else None
                    checkpoint.save_training(manager, state, model, data_key, best)
                if rehearsing:
                    planning = False
                    plan, stop_step = budget.plan(step, time.perf_counter() - finish_start, recipe, kept)
                    decay_every = plan.decay_every_steps
                    state = state.replace(opt_state=with_decay_every(state.opt_state, decay_every))
                    if not kept:
                        budgets.write_plan(workdir, plan, recipe, budget, step)
                    progress.total = stop_step
                    reporter.say(f"budget: {budget.step_seconds * 1e3:.1f} ms a step, {budget.finish_seconds:.1f} s "
                                 f"for the evaluation, images and checkpoint; plan {plan.total_steps} of the "
                                 f"config's {recipe.total_steps} steps, lr ×{config.optimizer.decay_factor:g} every "
                                 f"{plan.decay_every_steps} (config: {recipe.decay_every_steps}); stopping at step "
                                 f"{stop_step}")
                window, window_start = [], time.perf_counter()
                if stopping:
                    raise stop.stopped(step, manager.directory)
    finally:
        manager.close()
        if data.tile_pool:
            data.tile_pool.close()
        if writer:
            writer.close()
    if kept and start >= kept.total_steps:
        reporter.say(f"nothing left to train: this workdir's plan of {kept.total_steps} steps is done "
                     f"({workdir / budgets.PLAN_FILE}); another workdir starts a new run")
    elif budget and stop_step < recipe.total_steps:
        reporter.say(f"budget reached after step {stop_step}" + (
            f"; run the same command again to continue to the planned step {plan.total_steps}"
            if stop_step < plan.total_steps else ""))

    predict = TiledVDSR(model, distributed.local_copy(state.params))
    if not metrics:  # nothing was left to train: a finished run started again
        metrics = evaluate(predict, eval_sets, config.eval_scales)
    if main_process:
        if compared_at != step:  # a rehearsal at the last step wrote them already
            comparisons = write_comparisons(predict, next(iter(eval_sets.values())), config.eval_scales[0],
                                            workdir / "images", config.comparison_images)
        report(metrics, config, workdir, comparisons)
    return metrics


def _report_pool(tile_pool, wait: float, period, notes: set, reporter: Reporter) -> None:
    """Once a run (recorded in `notes`): the host's tile rate and the refresh period that keeps it 3× ahead of
    the steps (after the first scheduled refresh); a warning the first time training waited over 10 % for
    tiles."""
    if period is None:
        return
    layout, rate = tile_pool.layout, tile_pool.host_tiles_per_s
    if wait > 0.1 and "input-bound" not in notes:
        reporter.warn(f"input-bound: training waited {wait:.0%} of its time for the tile pool's refresh (the host "
                      f"builds {rate:.0f} tiles/s, {layout.refresh_tiles} are due every {layout.refresh_every} "
                      f"steps); data.refresh_every_steps={period} (each tile serving more steps) or more "
                      "data.workers would keep the devices busy")
        notes.update({"input-bound", "rate"})
    elif "rate" not in notes:
        reporter.say(f"data: the host builds {rate:.0f} tiles/s; refreshing every {period} "
                     f"step{'s' * (period > 1)} would keep it 3× ahead of these steps "
                     f"(data.refresh_every_steps={layout.refresh_every})")
        notes.add("rate")


def report(metrics: dict, config, workdir: Path, comparisons: list[Path]) -> None:
    """The closing summary: PSNR against bicubic per set and scale, and where the outputs are."""
    print("\nfinal evaluation (Y channel, MATLAB protocol):")
    for name in config.eval_sets:
        for scale in config.eval_scales:
            key = f"{name}_x{scale}"
            vdsr, bicubic = metrics[f"psnr/{key}"], metrics[f"bicubic_psnr/{key}"]
            print(f"  {key}: VDSR {vdsr:.2f} dB, bicubic {bicubic:.2f} dB ({vdsr - bicubic:+.2f} dB)")
    print(f"checkpoint:  {workdir / 'checkpoints'}")
    tensorboard = workdir / "tensorboard"  # absent where tensorboardX is not installed
    print(f"plot:        {workdir / 'training.png'}"
          + (f"  (TensorBoard: {tensorboard})" if tensorboard.is_dir() else ""))
    print(f"metrics:     {workdir / 'metrics.jsonl'}")
    print(f"comparisons: {', '.join(str(p) for p in comparisons)}  (bicubic | VDSR | HR)")
