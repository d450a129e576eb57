"""Stages (c, f): a vdsr_jax config (`--config x234`, the paper's recipe, or `x234_long`) trained by the library
loop, `vdsr_jax.training.train_and_evaluate`, on the packed 291 images (`folder:` source, training Y PNGs) with
`time_budget_minutes` = the time left to the stage's deadline: the loop plans the steps that fit and scales the
lr schedule to them (`vdsr_jax.budget`), and ends with its own evaluation on the packed Set5/Set14.

The results are read from what the loop writes in WORK/train_<config>/: steps and schedule (plan.json, or the
config's when the recipe fits), loss, lr and patches/s (metrics.jsonl; the loop's patches/s is the median over
its log windows after the first, which includes compiling), final PSNRs (its last evaluation). The final
checkpoint's weights go to OUT/weights.npz (x234) or OUT/weights_<config>.npz in `vdsr_jax.pretrained` format;
the metrics to OUT/train_log_<config>.jsonl; a summary to WORK/train_<config>.json.
"""
import datetime
import json
import shutil
import statistics
import time

from benchmarks.gpu.common import log, precision_context, stage_args, write_json

WEIGHTS = {"x234": "weights.npz"}  # the paper's recipe gives the shipped weights' file name


def weights_name(config_name: str) -> str:
    return WEIGHTS.get(config_name, f"weights_{config_name}.npz")


def stage_config(name: str, s: dict, pack, until: float, dtype: str):
    """The installed config `name` on the pack's data at the run's size, budgeted to `until` (time.time())."""
    from vdsr_jax.configs import x234, x234_long

    config = {"x234": x234, "x234_long": x234_long}[name].get_config()
    config.train_data, config.train_manual_dir = f"folder:{pack / 'train291'}", ""
    config.eval_sets = {n.lower(): f"folder:{pack / 'benchmarks' / n}" for n in s["eval_sets"]}
    config.eval_scales = tuple(s["eval_scales"])
    config.batch_size = s["train_batch"]
    config.patch_size = s["patch"]
    config.model.depth, config.model.features, config.model.compute_dtype = s["depth"], s["features"], dtype
    if name == "x234" and s["train_steps"]:
        config.num_steps = s["train_steps"]
    if name == "x234_long" and s["long_steps_per_epoch"]:
        config.steps_per_epoch = s["long_steps_per_epoch"]
    # evaluate and checkpoint at the end only: every evaluation on the way costs training time
    config.eval_every_steps = config.checkpoint_every_steps = 10**9
    config.log_every_steps = s["log_every"]
    config.comparison_images = 1
    config.time_budget_minutes = max(until - time.time(), 1.0) / 60
    return config


def summarize(config, workdir) -> dict:
    """Steps, schedule, loss, lr, patches/s and final PSNRs from the loop's metrics.jsonl and plan.json."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if any(k.startswith("psnr/") for k in r)]
    plan_file = workdir / "plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else None
    lrs = {}
    for r in train:
        lrs.setdefault(r["lr"], r["step"])
    return {
        "steps": train[-1]["step"], "final_loss": train[-1]["loss"],
        "loop_patches_per_s": statistics.median(r["patches_per_second"] for r in train[1:]) if len(train) > 1 else None,
        "plan": plan, "schedule": "recipe" if plan is None or plan["total_steps"] == plan["recipe_total_steps"] else
        f"scaled to the budget: {plan['total_steps']} of {plan['recipe_total_steps']} steps, lr ÷10 every "
        f"{plan['decay_every_steps']} (recipe {plan['recipe_decay_every_steps']})",
        "lr_first_step": {f"{lr:g}": step for lr, step in lrs.items()},
        "final_eval": {k: v for k, v in evals[-1].items() if k != "step"} if evals else {},
    }


def main(argv=None) -> int:
    import jax

    from vdsr_jax import checkpoint, pretrained
    from vdsr_jax.training import train_and_evaluate

    args = stage_args(argv)
    s, name = args.settings, args.config
    t0 = time.time()
    precision = s["train_precision"] if name == "x234" else s["long_precision"]
    dtype, context = precision_context(precision)
    workdir = args.work / f"train_{name}"
    config = stage_config(name, s, args.pack, args.until, dtype)
    log("train", f"{name}: {precision}, batch {config.batch_size}, budget {config.time_budget_minutes * 60:.0f} s")
    with context:
        train_and_evaluate(config, workdir, started=t0)
    result = {"config": f"vdsr_jax.configs.{name}", "precision": precision, "compute_dtype": dtype,
              "batch": config.batch_size, "patch": s["patch"], "depth": s["depth"], "features": s["features"],
              "stage_s": time.time() - t0, **summarize(config, workdir)}
    shutil.copyfile(workdir / "metrics.jsonl", args.out / f"train_log_{name}.jsonl")
    model, params = checkpoint.load_model(workdir)
    device = jax.devices()[0]
    provenance = {
        "trained_by": "vdsr_jax.training.train_and_evaluate (benchmarks/gpu_run.sh)", "config": result["config"],
        "overrides": {"batch_size": config.batch_size, "model.compute_dtype": dtype, "matmul_precision": precision,
                      "model.depth": s["depth"], "model.features": s["features"],
                      "time_budget_minutes": config.time_budget_minutes},
        "schedule": result["schedule"], "steps": result["steps"], "patches": result["steps"] * config.batch_size,
        "precision": precision, "wall_seconds": {"train_stage": result["stage_s"]},
        "hardware": f"{jax.device_count()} × {device.device_kind} ({jax.default_backend()})",
        "software": {"jax": jax.__version__}, "final_loss": result["final_loss"],
        "data": "train291 (T91 + BSD200) as 8-bit training Y, scales 2/3/4, downsizes 1/0.7/0.5, 41×41, rot/flip",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tiny_smoke_run": bool(s["tiny"]), "evaluation": [],
    }
    result["weights"] = str(pretrained.export_pretrained(params, model, args.out / weights_name(name), provenance))
    write_json(args.work / f"train_{name}.json", result)
    log("train", f"{name}: {result['steps']} steps, {result['schedule']}, loss {result['final_loss']:.5g}, "
                 f"{result['loop_patches_per_s'] or 0:.0f} patches/s in the loop; weights {result['weights']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
