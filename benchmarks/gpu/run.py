"""Driver of the GPU run: runs the stages (see benchmarks/gpu/__init__.py) within one time budget and writes
OUT/results.json; OUT/train_log_<config>.jsonl, OUT/weights.npz (x234) and OUT/weights_x234_long.npz come from
the stages, OUT/run.log from benchmarks/gpu_run.sh.

    python -m benchmarks.gpu.run --out OUT [--pack .device_pack] [--work DIR]

Budget (settings in common.py, all overridable by VDSR_GPU_<NAME>): the whole run ends by `budget_s` after
the start. The three benchmarks (train step jax, torch; inference) come first, each within its own cap, cut
short so that training keeps `recipe_s` + `long_min_s`; then the paper's recipe (x234) within `recipe_s` and its
evaluation, then x234_long for the time left before its own evaluation (`eval_reserve_s` is split between the
two evaluations). A stage that passes its deadline by `grace_s` is killed; what it wrote so far is kept. A stage that fails or is killed is
recorded in the timeline with its exit status and the last lines of its stderr (which is streamed to ours as it
comes), and the later stages still run where their inputs exist.
"""
import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.gpu.common import GOALS, PAPER, log, read_json, settings, write_json

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ("x234", "x234_long")  # the paper's recipe, then the longer run
TORCH_PAIR = {"float32": ["fp32"], "tf32": ["tf32"], "bf16": ["bf16_channels_last", "bf16_compiled"]}
STDERR_LINES = 20  # of a failed stage, kept in results.json


def stage_command(name: str, work: Path, until: float, out: Path, pack: Path, config: str = "x234") -> list[str]:
    return [sys.executable, "-m", f"benchmarks.gpu.{name}", str(work), "--until", f"{until:.3f}", "--out", str(out),
            "--pack", str(pack), "--config", config]


class Stage:
    """A stage's process, started at once; its stderr goes on to ours line by line, the last lines kept."""

    def __init__(self, name: str, work: Path, until: float, out: Path, pack: Path, config: str = "x234"):
        self.name, self.start, self.end = name, time.time(), None
        t0 = float(os.environ["VDSR_GPU_T0"])
        self.entry = {"start_s": self.start - t0, "until_s": until - t0}
        self.process = subprocess.Popen(stage_command(name, work, until, out, pack, config), cwd=REPO,
                                        stderr=subprocess.PIPE, text=True, errors="replace")
        self.tail = collections.deque(maxlen=STDERR_LINES)
        self.reader = threading.Thread(target=self._stream, daemon=True)
        self.reader.start()

    def _stream(self):
        for line in self.process.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            self.tail.append(line.rstrip("\n"))
        self.end = time.time()  # stderr closes when the process ends

    def wait(self, timeout: float) -> dict:
        """The timeline entry: status, exit status, seconds, and for a failure the last stderr lines; a stage
        still running after `timeout` seconds is killed."""
        try:
            self.process.wait(timeout=timeout)
            self.entry["status"] = "ok" if self.process.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.entry["status"] = "killed at its deadline"
        self.reader.join(timeout=10)
        self.entry["returncode"] = self.process.returncode
        self.entry["seconds"] = (self.end or time.time()) - self.start
        if self.entry["status"] != "ok":
            self.entry["stderr_tail"] = list(self.tail)
        log("run", f"{self.name}: {self.entry['status']} (exit {self.process.returncode}) in "
                   f"{self.entry['seconds']:.1f} s")
        return self.entry


def run_stage(name: str, s: dict, work: Path, until: float, out: Path, pack: Path, config: str = "x234") -> dict:
    return Stage(name, work, until, out, pack, config).wait(max(5.0, until - time.time() + s["grace_s"]))


def not_run(why: str) -> dict:
    return {"status": "not run", "why": why, "seconds": 0.0}


def assemble(s: dict, work: Path, timeline: dict, start: float) -> dict:
    jax_bench = read_json(work / "bench_jax.json", {})
    torch_bench = read_json(work / "bench_torch.json", {})
    trained = {name: read_json(work / f"train_{name}.json", {}) for name in CONFIGS}
    train = trained["x234"]
    inference = read_json(work / "bench_infer.json", {})
    eval_rows = [row for name in CONFIGS for row in read_json(work / f"eval_{name}.json", {}).get("rows", [])]
    rates = [r["tflops"] for r in (jax_bench.get("matmul"), torch_bench.get("matmul")) if r]
    ceiling = max(rates) if rates else None
    rows = jax_bench.get("steps", []) + torch_bench.get("steps", [])
    for row in rows:
        row["share_of_ceiling"] = row["tflops"] / ceiling if ceiling else None
    pairs = []
    for row in jax_bench.get("steps", []):
        same_batch = [t for t in torch_bench.get("steps", []) if t["batch"] == row["batch"]]
        peers = [t for t in same_batch if t["setting"] in TORCH_PAIR[row["setting"]]]
        best_peer = min(peers, key=lambda t: t["ms"]) if peers else None
        best_torch = min(same_batch, key=lambda t: t["ms"]) if same_batch else None
        pairs.append({"batch": row["batch"], "vdsr_jax": row["setting"], "vdsr_jax_ms": row["ms"],
                      "torch": best_peer and best_peer["setting"], "torch_ms": best_peer and best_peer["ms"],
                      "ratio": best_peer and best_peer["ms"] / row["ms"],
                      "torch_best": best_torch and best_torch["setting"],
                      "ratio_vs_torch_best": best_torch and best_torch["ms"] / row["ms"]})
    isolated = [r for r in jax_bench.get("steps", [])
                if r["setting"] == train.get("precision") and r["batch"] == train.get("batch")]
    if train:
        train["isolated_step_patches_per_s"] = isolated[0]["patches_per_s"] if isolated else None
        train["isolated_step_note"] = ("benchmark stage: same precision and batch, pytorch-vdsr's model "
                                       "(no biases, global-norm clipping); training: x234 (biases, adjustable clipping)")
    best = {impl: max((r for r in inference.get("steps", []) if r["impl"] == impl), key=lambda r: r["frames_per_s"],
                      default=None) for impl in ("vdsr_jax", "torch")}
    inference["best"] = best
    inference["ratio_jax_over_torch"] = (best["vdsr_jax"]["frames_per_s"] / best["torch"]["frames_per_s"]
                                         if best["vdsr_jax"] and best["torch"] else None)
    bf16 = [r for r in jax_bench.get("steps", []) if r["setting"] == "bf16"]
    bf16_pairs = [p for p in pairs if p["vdsr_jax"] == "bf16" and p["ratio_vs_torch_best"]]
    stage_wall = {name: entry.get("seconds") for name, entry in timeline.items()}
    recipe_wall = sum(v for v in (stage_wall.get("train_x234"), stage_wall.get("eval_x234")) if v)
    best_step = max((r["patches_per_s"] for r in jax_bench.get("steps", [])), default=None)
    sampler = jax_bench.get("sampler", {}).get("patches_per_s")
    goals = {
        "sampler_over_best_step": sampler / best_step if sampler and best_step else None,
        "best_bf16_share_of_ceiling": max((r["share_of_ceiling"] or 0 for r in bf16), default=None),
        "best_bf16_ratio_vs_torch_best": max((p["ratio_vs_torch_best"] for p in bf16_pairs), default=None),
        "rows_at_or_above_paper": [f"{r['config']} {r['dataset']} x{r['scale']}" for r in eval_rows
                                   if r["dataset"] in PAPER and r["vdsr_psnr"] >= PAPER[r["dataset"]][r["scale"]]],
        "rows_below_paper": [f"{r['config']} {r['dataset']} x{r['scale']}" for r in eval_rows
                             if r["dataset"] in PAPER and r["vdsr_psnr"] < PAPER[r["dataset"]][r["scale"]]],
        "recipe_wall_s": recipe_wall,
        "recipe_complete": train.get("schedule") == "recipe" and train.get("steps") == 9960,
        "targets": GOALS,
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"tiny_smoke_run": s["tiny"], "git_commit": commit, "settings": s, "wall_s": time.time() - start,
            "timeline": timeline, "env": jax_bench.get("env"),
            "torch_env": {k: v for k, v in torch_bench.items() if k not in ("steps", "skipped", "matmul")},
            "ceiling": {"bf16_matmul_tflops": ceiling, "jax": jax_bench.get("matmul"), "torch": torch_bench.get("matmul")},
            "sampler": jax_bench.get("sampler"),
            "throughput": {"rows": rows, "pairs": pairs,
                           "skipped": jax_bench.get("skipped", []) + torch_bench.get("skipped", [])},
            "inference": inference, "training": trained, "evaluation": eval_rows, "goals": goals}


def summary(results: dict) -> str:
    lines = [f"== GPU run{' (tiny smoke run)' if results['tiny_smoke_run'] else ''}: {results['wall_s']:.0f} s wall"]
    env = results.get("env") or {}
    ceiling = results["ceiling"]["bf16_matmul_tflops"]
    lines.append(f"device {env.get('device_kind')} jax {env.get('jax')}; bf16 matmul ceiling "
                 f"{ceiling:.1f} TFLOP/s" if ceiling else f"device {env.get('device_kind')}; no ceiling measured")
    lines.append("| impl | setting | batch | ms/step | patches/s | TFLOP/s | of ceiling |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results["throughput"]["rows"]:
        share = f"{100 * r['share_of_ceiling']:.1f} %" if r.get("share_of_ceiling") is not None else "-"
        lines.append(f"| {r['impl']} | {r['setting']} | {r['batch']} | {r['ms']:.2f} | {r['patches_per_s']:.0f} | "
                     f"{r['tflops']:.2f} | {share} |")
    for p in results["throughput"]["pairs"]:
        if p["ratio"]:
            lines.append(f"ratio batch {p['batch']} {p['vdsr_jax']} vs torch {p['torch']}: {p['ratio']:.2f} "
                         f"(vs torch's best {p['torch_best']}: {p['ratio_vs_torch_best']:.2f})")
    inference = results["inference"]
    for r in inference.get("steps", []):
        lines.append(f"inference ×2 {inference['frame'][1]}×{inference['frame'][0]} Y: {r['impl']} {r['setting']} "
                     f"{r['frames_per_s']:.2f} frames/s")
    if inference.get("ratio_jax_over_torch"):
        lines.append(f"inference best vdsr_jax ({inference['best']['vdsr_jax']['setting']}) / best torch "
                     f"({inference['best']['torch']['setting']}): {inference['ratio_jax_over_torch']:.2f}")
    for name, t in results["training"].items():
        if t.get("steps"):
            lines.append(f"training {name}: {t['steps']} steps × {t['batch']} ({t['precision']}), {t['schedule']}; "
                         f"lr from step {t['lr_first_step']}; stage {t['stage_s']:.0f} s; loss {t['final_loss']:.4g}; "
                         f"loop patches/s {t.get('loop_patches_per_s') or 0:.0f} (isolated step: "
                         f"{t.get('isolated_step_patches_per_s') or 0:.0f})")
    for r in results["evaluation"]:
        lines.append(f"{r['config']} {r['dataset']} ×{r['scale']}: VDSR {r['vdsr_psnr']:.2f} dB / {r['vdsr_ssim']:.4f}, bicubic "
                     f"{r['bicubic_psnr']:.2f}; paper {r.get('paper_psnr')}, pytorch-vdsr {r.get('pytorch_vdsr_psnr')}")
    lines.append(f"goals: {results['goals']}")
    lines.append("stages: " + ", ".join(f"{k} {v['status']} {figure(v.get('seconds'), '.0f')} s"
                                        for k, v in results["timeline"].items()))
    for name, entry in results["timeline"].items():
        if entry.get("status") not in ("ok", "not run"):
            last = next((line for line in reversed(entry.get("stderr_tail") or []) if line.strip()), "")
            lines.append(f"{name} {entry['status']} (exit {entry.get('returncode')}): {last}")
    return "\n".join(lines)


def figure(value, spec: str) -> str:
    """`value` formatted by `spec`, or "-" where a stage did not measure it (None)."""
    return "-" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu.run", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pack", type=Path, default=REPO / ".device_pack")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    start = time.time()
    os.environ.setdefault("VDSR_GPU_T0", str(start))
    s = settings()
    if s["tiny"] and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # the smoke run checks the code, not its speed: XLA's CPU compiler is ~8× faster without LLVM's opt
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    out, pack = args.out.resolve(), args.pack.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="vdsr_gpu_run_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "settings.json", s)
    log("run", f"{'tiny smoke run' if s['tiny'] else 'GPU run'}: budget {s['budget_s']} s, pack {pack}, work {work}")
    if not (pack / "train291").is_dir():
        log("run", f"error: {pack}/train291 is missing (python -m benchmarks.pack_device_data --out {pack})")
        return 1

    deadline = start + s["budget_s"]
    half_eval = s["eval_reserve_s"] / 2
    bench_limit = deadline - s["eval_reserve_s"] - s["recipe_s"] - s["long_min_s"]
    timeline = {}
    for stage, cap in (("bench_jax", "jax_bench_s"), ("bench_torch", "torch_bench_s"), ("bench_infer", "infer_s")):
        timeline[stage] = run_stage(stage, s, work, min(time.time() + s[cap], bench_limit), out, pack)
    for name in CONFIGS:
        until = (min(time.time() + s["recipe_s"], deadline - s["eval_reserve_s"] - s["long_min_s"])
                 if name == "x234" else min(time.time() + s["long_max_s"], deadline - half_eval))
        timeline[f"train_{name}"] = run_stage("train_run", s, work, until, out, pack, name)
        timeline[f"eval_{name}"] = (run_stage("eval_run", s, work, time.time() + half_eval, out, pack, name)
                                    if timeline[f"train_{name}"]["status"] == "ok"
                                    else not_run(f"no weights (train_{name} {timeline[f'train_{name}']['status']})"))
    results = assemble(s, work, timeline, start)
    write_json(out / "results.json", results)
    print(summary(results), flush=True)
    return 0 if all(entry["status"] == "ok" for entry in timeline.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
