"""Stages (c) and (f): the paper's recipe (vdsr_jax.configs.x234) trained by vdsr_jax, its schedule scaled to the
time left; the loop's own patches/s; the weights as OUT/weights.npz (`vdsr_jax.pretrained` format).

Schedule: x234's 80 epochs with lr ÷10 every 20 epochs, where an epoch is `steps_per_epoch` steps. The
recipe's epoch is one pass over the non-overlapping patches (`patches_per_epoch / batch` steps). When that
does not fit before the deadline, the run keeps the 80-epoch shape with shorter epochs: total steps = as many
as fit (planned from the benchmark's step time at this precision and batch, or `fallback_step_ms`), and
steps_per_epoch = total / 80, so the lr still drops at ¼, ½ and ¾ of the run. The results say which.

The loop is this stage's own, not `vdsr_jax.training.train_and_evaluate`: it must stop at a wall-clock
deadline, plan its steps from the benchmark, and time itself. It is the same step
(`train_step.make_sampling_train_step`, the model from `vdsr_jax.model.create_model` with the config's
`zero_init_output`) on the same pairs. The first `sync_steps` steps read the loss after every step (as
`vdsr_jax.train`'s loop did before 9d24ae5); the rest read it every `log_every` steps, as the library loop
now does at its log steps. Both rates are reported beside the isolated step's. The loop stops at the deadline
even if the planned steps are not done (the results say so).
"""
import datetime
import json
import math
import time

import numpy as np

from benchmarks.gpu.common import log, precision_context, read_json, stage_args, write_json


def plan_steps(s: dict, recipe_steps: int, work, until: float, precision: str) -> tuple[int, str, float]:
    """(total steps, how they were chosen, step seconds assumed)."""
    if s["train_steps"]:
        return s["train_steps"], "fixed by train_steps", float("nan")
    rows = (read_json(work / "bench_jax.json") or {}).get("steps", [])
    same = [r for r in rows if r["setting"] == precision and r["batch"] == s["train_batch"]]
    similar = [r for r in rows if r["setting"] == precision]
    if same:
        step_s, source = same[0]["ms"] / 1e3, f"benchmark step time at batch {s['train_batch']}"
    elif similar:  # per-patch time of the nearest batch
        near = min(similar, key=lambda r: abs(r["batch"] - s["train_batch"]))
        step_s, source = near["ms"] / 1e3 * s["train_batch"] / near["batch"], f"benchmark at batch {near['batch']}, scaled"
    else:
        step_s, source = s["fallback_step_ms"] / 1e3, "fallback_step_ms (no benchmark of this setting)"
    available = until - time.time() - s["compile_reserve_s"]
    fit = int(0.92 * available / step_s)
    return max(1, min(recipe_steps, fit)), f"fit to {available:.0f} s at {step_s * 1e3:.2f} ms/step ({source})", step_s


def main(argv=None) -> int:
    import jax

    from benchmarks.gpu.prep import load_source
    from vdsr_jax import pretrained
    from vdsr_jax.configs import x234
    from vdsr_jax.data.patches import patches_per_epoch
    from vdsr_jax.model import create_model
    from vdsr_jax.optim import learning_rate_schedule, make_optimizer
    from vdsr_jax.train_step import create_train_state, data_mesh, make_sampling_train_step, replicated

    args = stage_args(argv)
    s = args.settings
    t0 = time.time()
    precision = s["train_precision"]
    dtype, context = precision_context(precision)
    config = x234.get_config()
    config.batch_size = s["train_batch"]
    config.loss_scale = 0.5 / config.batch_size  # the paper's ½·mean over the batch
    config.model.depth, config.model.features, config.model.compute_dtype = s["depth"], s["features"], dtype
    result = {"config": "vdsr_jax.configs.x234", "precision": precision, "compute_dtype": dtype, "batch": config.batch_size,
              "patch": s["patch"], "depth": s["depth"], "features": s["features"], "status": "started"}
    out_json = args.work / "train.json"
    write_json(out_json, result)

    while not (args.work / "prep.json").exists():  # the prep stage runs beside the benchmarks
        if time.time() > args.until:
            raise TimeoutError("the training pairs were not ready before the deadline")
        time.sleep(0.5)
    host_source = load_source(args.work / "pairs.npz")
    per_epoch = patches_per_epoch(host_source, s["patch"])
    recipe_spe = math.ceil(per_epoch / config.batch_size)
    recipe_steps = config.num_epochs * recipe_spe
    total, how, assumed_step_s = plan_steps(s, recipe_steps, args.work, args.until, precision)
    spe = max(1, total // config.num_epochs)
    if total >= config.num_epochs:
        total = spe * config.num_epochs  # whole scaled epochs, so the lr drops at ¼, ½, ¾
    result.update({"patches_per_epoch": per_epoch, "recipe_steps_per_epoch": recipe_spe, "recipe_steps": recipe_steps,
                   "steps_planned": total, "steps_per_epoch": spe, "epochs": config.num_epochs,
                   "decay_every_epochs": config.optimizer.decay_every_epochs, "plan": how,
                   "schedule": "recipe" if total == recipe_steps else
                   f"scaled: {config.num_epochs} epochs of {spe} steps (recipe {recipe_spe}), lr ÷10 every "
                   f"{config.optimizer.decay_every_epochs} epochs; {total / recipe_steps:.3f} of the recipe's patches"})
    log("train", f"{total} steps of {config.batch_size} × {s['patch']}² ({precision}); {result['schedule']}; {how}")
    write_json(out_json, result)

    mesh = data_mesh()
    model = create_model(config.model)  # depth, features, compute_dtype overridden above; zero_init_output
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    lr_at = learning_rate_schedule(config.optimizer.learning_rate, spe, config.optimizer.decay_every_epochs,
                                   config.optimizer.decay_factor)
    with context:
        optimizer = make_optimizer(config, spe)
        state = jax.jit(lambda k: create_train_state(model, optimizer, k))(
            init_key)  # jitted: an eager init compiles every op on its own
        state = jax.device_put(state, replicated(mesh))
        source = jax.device_put(host_source, replicated(mesh))
        step_fn = make_sampling_train_step(mesh, config.batch_size, s["patch"], config.augment, config.loss_scale)
        start = time.perf_counter()
        compiled = step_fn.lower(state, source, data_key).compile()
        result["compile_s"] = time.perf_counter() - start
    log("train", f"compiled in {result['compile_s']:.1f} s")

    sync_steps = min(s["sync_steps"], max(1, total // 10))
    log_path = args.out / "train_log.jsonl"
    log_file = log_path.open("w")
    pending, window_start, done, stopped = [], time.perf_counter(), 0, None
    loop_start = time.perf_counter()
    sync_end = None
    last_loss = float("nan")
    for step in range(1, total + 1):
        state, loss = compiled(state, source, data_key)
        done = step
        if step <= sync_steps:
            pending.append(float(loss))  # a read after every step
            if step == sync_steps:
                sync_end = time.perf_counter()
        else:
            pending.append(loss)
        if step % s["log_every"] == 0 or step == total or step == sync_steps:
            values = np.asarray(jax.device_get(pending), np.float64)
            now = time.perf_counter()
            last_loss = float(values.mean())
            record = {"step": step, "loss": last_loss, "lr": float(lr_at(step - 1)), "elapsed_s": now - loop_start,
                      "patches_per_s": len(values) * config.batch_size / (now - window_start),
                      "loss_read": "every step" if step <= sync_steps else f"every {s['log_every']} steps"}
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            pending, window_start = [], now
            if not np.all(np.isfinite(values)):
                stopped = f"the loss became non-finite by step {step}"
                break
            if time.time() > args.until:
                stopped = f"deadline reached after {step} of {total} steps"
                break
            if step % (s["log_every"] * 20) == 0:
                log("train", f"step {step}/{total} loss {last_loss:.5g} lr {record['lr']:.3g} "
                             f"{record['patches_per_s']:.0f} patches/s")
    jax.block_until_ready(state.params)
    loop_end = time.perf_counter()
    log_file.close()
    sync_s = (sync_end or loop_end) - loop_start
    async_steps = done - sync_steps
    result.update({
        "status": "stopped" if stopped else "done", "stopped": stopped, "steps": done,
        "patches": done * config.batch_size, "epochs_equivalent": done * config.batch_size / per_epoch,
        "final_loss": last_loss, "loop_s": loop_end - loop_start,
        "loop_patches_per_s_sync_every_step": sync_steps * config.batch_size / sync_s if sync_s > 0 else None,
        "loop_patches_per_s": (async_steps * config.batch_size / (loop_end - sync_end)
                               if sync_end and async_steps > 0 else None),
        "sync_steps": sync_steps, "prep_s": (read_json(args.work / "prep.json") or {}).get("seconds"),
        "assumed_step_ms": assumed_step_s * 1e3,
    })
    device = jax.devices()[0]
    provenance = {
        "trained_by": "vdsr_jax (benchmarks/gpu_run.sh, stage c)", "config": "vdsr_jax.configs.x234",
        "overrides": {"batch_size": config.batch_size, "model.compute_dtype": dtype, "matmul_precision": precision,
                      "model.depth": s["depth"], "model.features": s["features"]},
        "schedule": result["schedule"], "steps": done, "steps_per_epoch": spe, "patches": result["patches"],
        "epochs_equivalent": result["epochs_equivalent"], "precision": precision,
        "wall_seconds": {"prep": result["prep_s"], "compile": result["compile_s"], "train_loop": result["loop_s"]},
        "hardware": f"{jax.device_count()} × {device.device_kind} ({jax.default_backend()})",
        "software": {"jax": jax.__version__}, "final_loss": last_loss, "stopped": stopped,
        "data": "train291 (T91 + BSD200) as 8-bit training Y, scales 2/3/4, downsizes 1/0.7/0.5, 41×41, rot/flip",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tiny_smoke_run": bool(s["tiny"]), "evaluation": [],
    }
    weights = pretrained.export_pretrained(state.params, model, args.out / "weights.npz", provenance)
    result["weights"] = str(weights)
    result["stage_s"] = time.time() - t0
    write_json(out_json, result)
    rate = result["loop_patches_per_s"] or result["loop_patches_per_s_sync_every_step"]
    log("train", f"{done} steps, loss {last_loss:.5g}, {rate:.0f} patches/s in the loop; weights {weights}")
    return 0 if not stopped or stopped.startswith("deadline") else 1


if __name__ == "__main__":
    raise SystemExit(main())
