"""Train VDSR data-parallel over all devices.

    python -m vdsr_jax.train --config configs/x234.py --workdir runs/x234 [--config.num_epochs=1 …]

`train_and_evaluate(config, workdir)` is the whole job and can be called from a notebook. Runs resume from
the newest readable checkpoint in `workdir/checkpoints` and continue bit for bit as if never stopped: the
data of step t depends only on the checkpointed PRNG key and t.
"""
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from vdsr_jax import checkpoint, distributed, input_pipeline
from vdsr_jax.evaluate import evaluate_images
from vdsr_jax.inference import TiledVDSR
from vdsr_jax.metric_writer import MetricWriter
from vdsr_jax.model import VDSR
from vdsr_jax.optim import learning_rate_schedule, make_optimizer
from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, replicated

MAX_SCALE = 8


class ConfigError(ValueError):
    """A config value that cannot work; raised before anything is loaded or compiled."""


class TrainingDiverged(RuntimeError):
    """The loss stopped being finite."""


def validate_config(config, device_count: int) -> None:
    """Refuse a bad config with one message naming the field, before data loading or compilation."""

    def positive_int(name, value, minimum=1):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"config.{name} must be an integer ≥ {minimum}, not {value!r}")

    for name in ("scales", "eval_scales"):
        scales = tuple(config[name])
        if not scales or any(not isinstance(s, int) or not 2 <= s <= MAX_SCALE for s in scales):
            raise ConfigError(f"config.{name} must list integer scales in 2..{MAX_SCALE}, not {scales!r}")
    positive_int("patch_size", config.patch_size, 2)
    positive_int("batch_size", config.batch_size)
    if config.batch_size % device_count:
        raise ConfigError(f"config.batch_size={config.batch_size} is not divisible by the {device_count} devices")
    for name in ("num_epochs", "steps_per_epoch", "num_steps"):
        positive_int(name, config[name], 0)
    if config.num_steps == 0 and config.num_epochs == 0:
        raise ConfigError("config.num_epochs or config.num_steps must be > 0")
    for name in ("eval_every_steps", "checkpoint_every_steps", "keep_checkpoints", "log_every_steps"):
        positive_int(name, config[name])
    if not config.downsizes or any(not 0 < d <= 1 for d in config.downsizes):
        raise ConfigError(f"config.downsizes must be factors in (0, 1], not {tuple(config.downsizes)!r}")
    opt = config.optimizer
    if opt.clipping not in ("global_norm", "adjustable"):
        raise ConfigError(f"config.optimizer.clipping must be 'global_norm' or 'adjustable', not {opt.clipping!r}")
    for name in ("learning_rate", "clip_norm", "clip_theta", "decay_factor"):
        if not opt[name] > 0:
            raise ConfigError(f"config.optimizer.{name} must be > 0, not {opt[name]!r}")
    if not config.loss_scale > 0:
        raise ConfigError(f"config.loss_scale must be > 0, not {config.loss_scale!r}")
    if config.model.compute_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"config.model.compute_dtype must be float32 or bfloat16, not {config.model.compute_dtype!r}")
    positive_int("model.depth", config.model.depth, 2)
    positive_int("model.features", config.model.features)
    sources = [(config.train_data, config.train_manual_dir, "train_manual_dir")]
    sources += [(name, where, f"eval_sets.{name}") for name, where in config.eval_sets.items()]
    for source, where, field in sources:
        if source.startswith(input_pipeline.SKIMAGE_PREFIX) or where.startswith(input_pipeline.SKIMAGE_PREFIX):
            continue
        if where and not Path(where).expanduser().is_dir():
            raise ConfigError(f"config.{field}: data folder {where} does not exist")


def create_model(config) -> VDSR:
    m = config.model
    return VDSR(depth=m.depth, features=m.features, use_bias=m.use_bias, dtype=jnp.dtype(m.compute_dtype))


def load_eval_sets(config) -> dict[str, list[np.ndarray]]:
    """name -> uint8 RGB images; a value `skimage:NAMES` names bundled images, else the builder's manual_dir."""
    sets = {}
    for name, where in config.eval_sets.items():
        if where.startswith(input_pipeline.SKIMAGE_PREFIX):
            sets[name] = input_pipeline.load_images(where, "", config.data_dir)
        else:
            sets[name] = input_pipeline.load_images(name, where, config.data_dir)
    return sets


def evaluate(predict: TiledVDSR, eval_sets: dict, scales) -> dict:
    """PSNR/SSIM under the paper's protocol for every set and scale, keyed `psnr/set5_x2` etc."""
    results = {}
    for name, images in eval_sets.items():
        for scale in scales:
            r = evaluate_images(predict, images, scale)
            results[f"psnr/{name}_x{scale}"] = r["vdsr_psnr"]
            results[f"ssim/{name}_x{scale}"] = r["vdsr_ssim"]
            results[f"bicubic_psnr/{name}_x{scale}"] = r["bicubic_psnr"]
    return results


def write_comparisons(predict: TiledVDSR, images, scale: int, directory: Path, count: int) -> list[Path]:
    """bicubic | VDSR | HR luminance panels of the first `count` eval images, as PNG."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for i, image in enumerate(images[:count]):
        bicubic, target = input_pipeline.bicubic_pair(input_pipeline.luminance(image), scale)
        panels = [bicubic, np.clip(predict(bicubic), 0, 1), target]
        row = np.concatenate([np.round(p * 255).astype(np.uint8) for p in panels], axis=1)
        path = directory / f"compare_{i}_x{scale}.png"
        Image.fromarray(row).save(path)
        written.append(path)
    return written


def train_and_evaluate(config, workdir) -> dict:
    """Train per `config`, writing checkpoints, logs, plot and comparison images in `workdir`.

    Returns the final eval metrics.
    """
    workdir = Path(workdir).expanduser()
    validate_config(config, jax.device_count())
    main_process = jax.process_index() == 0
    say = print if main_process else (lambda *a, **k: None)
    warn = lambda message: say(message, file=sys.stderr)  # noqa: E731

    train_images = input_pipeline.load_images(config.train_data, config.train_manual_dir, config.data_dir)
    eval_sets = load_eval_sets(config)
    source = input_pipeline.prepare_pairs(train_images, config.scales, config.downsizes, config.patch_size)
    steps_per_epoch = config.steps_per_epoch or math.ceil(
        input_pipeline.patches_per_epoch(source, config.patch_size) / config.batch_size)
    total_steps = config.num_steps or config.num_epochs * steps_per_epoch

    mesh = data_mesh()
    model = create_model(config)
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(model, make_optimizer(config, steps_per_epoch), init_key,
                               zero_output=config.model.zero_init_output)
    state = jax.device_put(state, replicated(mesh))
    # A global key, as multi-process orbax needs; device_put moves key data, not typed keys, across processes.
    data_key = jax.random.wrap_key_data(jax.device_put(jax.random.key_data(data_key), replicated(mesh)))
    device_source = jax.device_put(source, replicated(mesh))
    lr_at = learning_rate_schedule(config.optimizer.learning_rate, steps_per_epoch,
                                   config.optimizer.decay_every_epochs, config.optimizer.decay_factor)

    workdir.mkdir(parents=True, exist_ok=True)
    manager = checkpoint.training_manager(workdir / "checkpoints", config.keep_checkpoints)
    state, data_key = checkpoint.restore_training(manager, state, data_key, warn=warn)
    start = int(state.step)
    if main_process:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    writer = MetricWriter(workdir, resume_step=start) if main_process else None
    if start:
        say(f"resuming from step {start} in {workdir / 'checkpoints'}")

    metrics = {}
    train_step = make_sampling_train_step(mesh, config.batch_size, config.patch_size, config.augment,
                                          config.loss_scale)
    progress = tqdm(total=total_steps, initial=start, disable=not main_process, unit="step", dynamic_ncols=True)
    window, window_start = [], time.perf_counter()
    try:
        for step in range(start + 1, total_steps + 1):
            state, loss = train_step(state, device_source, data_key)
            loss = float(loss)
            if not math.isfinite(loss):
                kept = manager.latest_step()
                raise TrainingDiverged(
                    f"the loss became {loss} at step {step}; stopped. "
                    + (f"The last good checkpoint is step {kept} in {manager.directory}." if kept is not None
                       else "No checkpoint was written yet."))
            window.append(loss)
            progress.update(1)
            if step % config.log_every_steps == 0 or step == total_steps:
                rate = len(window) / (time.perf_counter() - window_start)
                scalars = {"loss": np.mean(window), "lr": float(lr_at(step - 1)), "steps_per_second": rate,
                           "patches_per_second": rate * config.batch_size}
                progress.set_postfix(loss=f"{scalars['loss']:.4g}", lr=f"{scalars['lr']:.3g}")
                if writer:
                    writer.write(step, scalars)
                window, window_start = [], time.perf_counter()
            evaluating = step % config.eval_every_steps == 0 or step == total_steps
            if evaluating:
                predict = TiledVDSR(model, distributed.local_copy(state.params))
                metrics = evaluate(predict, eval_sets, config.eval_scales)
                if writer:
                    writer.write(step, metrics)
                    writer.plot()
            if step % config.checkpoint_every_steps == 0 or step == total_steps:
                psnrs = [v for k, v in metrics.items() if k.startswith("psnr/")]
                best = {checkpoint.BEST_METRIC: float(np.mean(psnrs))} if evaluating and psnrs else None
                checkpoint.save_training(manager, state, model, data_key, best)
    finally:
        progress.close()
        manager.close()
        if writer:
            writer.close()

    predict = TiledVDSR(model, distributed.local_copy(state.params))
    if not metrics:  # nothing was left to train: a finished run started again
        metrics = evaluate(predict, eval_sets, config.eval_scales)
    if main_process:
        first_set = next(iter(eval_sets.values()))
        comparisons = write_comparisons(predict, first_set, config.eval_scales[0], workdir / "images",
                                        config.comparison_images)
        report(metrics, config, workdir, comparisons)
    return metrics


def report(metrics: dict, config, workdir: Path, comparisons: list[Path]) -> None:
    """The closing summary: PSNR against bicubic per set and scale, and where the outputs are."""
    print("\nfinal evaluation (Y channel, MATLAB protocol):")
    for name in config.eval_sets:
        for scale in config.eval_scales:
            key = f"{name}_x{scale}"
            vdsr, bicubic = metrics[f"psnr/{key}"], metrics[f"bicubic_psnr/{key}"]
            print(f"  {key}: VDSR {vdsr:.2f} dB, bicubic {bicubic:.2f} dB ({vdsr - bicubic:+.2f} dB)")
    print(f"checkpoint:  {workdir / 'checkpoints'}")
    print(f"plot:        {workdir / 'training.png'}  (TensorBoard: {workdir / 'tensorboard'})")
    print(f"metrics:     {workdir / 'metrics.jsonl'}")
    print(f"comparisons: {', '.join(str(p) for p in comparisons)}  (bicubic | VDSR | HR)")


def _cli() -> None:
    """`python -m vdsr_jax.train`: flags defined here so importing the module defines none."""
    from absl import app, flags, logging
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", "configs/demo.py", "config file (a get_config() module)",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "where checkpoints, logs and images go (default runs/<config name>)")
    distributed.define_flags()

    def run(_argv) -> int:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
        config_file = config_flags.get_config_filename(flags.FLAGS["config"])
        workdir = flags.FLAGS.workdir or f"runs/{Path(config_file).stem}"
        try:
            distributed.initialize_from_flags()  # a DistributedError is a ValueError
            train_and_evaluate(flags.FLAGS.config, workdir)
        except (ConfigError, TrainingDiverged, FileNotFoundError, ValueError, checkpoint.CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0

    app.run(lambda argv: sys.exit(run(argv)))


if __name__ == "__main__":
    _cli()
