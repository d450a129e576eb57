"""Training logs in the workdir: `metrics.jsonl`, TensorBoard events (tensorboardX, no TensorFlow; off, said
once, where tensorboardX is not installed) and a PNG plot of loss and PSNR against step, refreshed at each eval.
Every `metrics.jsonl` line is RFC 8259 JSON: an infinite PSNR is written as the string "inf".

A run's messages on the terminal go through a `Reporter`: its lines and its progress bar."""
import contextlib
import json
import sys
from pathlib import Path

from matplotlib.figure import Figure
from tqdm import tqdm

from vdsr_jax import strict_json
from vdsr_jax.media import atomic_output


class Reporter:
    """The lines a training run prints, from one process: `say` on stdout, `warn` on stderr, written beside the
    progress bar while `progress` has one open. Silent where `enabled` is False (all processes but 0)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def say(self, message: str, file=None) -> None:
        """One line on `file` (default stdout)."""
        if self.enabled:
            if self.bar is None:
                print(message, file=file)
            else:
                self.bar.write(message, file=file)

    def warn(self, message: str) -> None:
        """One line on stderr."""
        self.say(message, file=sys.stderr)

    @contextlib.contextmanager
    def progress(self, total: int, initial: int):
        """A tqdm bar of steps (none where disabled), closed on leaving; its `total` may be changed."""
        self.bar = tqdm(total=total, initial=initial, disable=not self.enabled, unit="step", dynamic_ncols=True)
        try:
            yield self.bar
        finally:
            self.bar.close()
            self.bar = None


class MetricWriter:
    """Appends scalars per step; on resume, drops records newer than the step training restarts from."""

    def __init__(self, workdir, resume_step: int = 0):
        self.workdir = Path(workdir)
        self.jsonl = self.workdir / "metrics.jsonl"
        self.plot_path = self.workdir / "training.png"
        self.history = [r for r in self._read() if r["step"] <= resume_step]
        self._rewrite()
        self.tensorboard = _tensorboard(self.workdir / "tensorboard", resume_step)

    def _read(self) -> list[dict]:
        if not self.jsonl.exists():
            return []
        records = []
        for line in self.jsonl.read_text().splitlines():
            try:
                records.append({k: float(v) if isinstance(v, str) else v for k, v in json.loads(line).items()})
            except json.JSONDecodeError:  # a line cut short by a kill
                break
        return records

    def _rewrite(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.jsonl, overwrite=True) as tmp:
            tmp.write_text("".join(_line(r) for r in self.history))

    def write(self, step: int, scalars: dict):
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self.history.append(record)
        with self.jsonl.open("a") as f:
            f.write(_line(record))
        if self.tensorboard is not None:
            for name, value in scalars.items():
                self.tensorboard.add_scalar(name, float(value), int(step))
            self.tensorboard.flush()

    def plot(self) -> Path:
        """Loss (log scale) and every `psnr/…` series against step, written atomically."""
        losses = [(r["step"], r["loss"]) for r in self.history if "loss" in r]
        psnr_names = sorted({k for r in self.history for k in r if k.startswith("psnr/")})
        fig = Figure(figsize=(11, 4))  # no pyplot: leaves a notebook's backend alone
        ax_loss, ax_psnr = fig.subplots(1, 2)
        if losses:
            ax_loss.plot(*zip(*losses))
            ax_loss.set_yscale("log")
        ax_loss.set(title="training loss", xlabel="step")
        for name in psnr_names:
            points = [(r["step"], r[name]) for r in self.history if name in r]
            line, = ax_psnr.plot(*zip(*points), marker="o", label=name.removeprefix("psnr/"))
            baseline = [r["bicubic_" + name] for r in self.history if "bicubic_" + name in r]
            if baseline:
                ax_psnr.axhline(baseline[-1], color=line.get_color(), linestyle="--", linewidth=1)
        ax_psnr.set(title="eval PSNR (dB); dashed: bicubic", xlabel="step")
        if psnr_names:
            ax_psnr.legend(fontsize="small")
        fig.tight_layout()
        with atomic_output(self.plot_path, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        return self.plot_path

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard(folder: Path, resume_step: int):
    """A tensorboardX SummaryWriter into `folder` that drops events after `resume_step`; None, said in one line
    on stderr, where tensorboardX is not installed."""
    try:
        from tensorboardX import SummaryWriter
    except ModuleNotFoundError as e:
        if e.name != "tensorboardX":
            raise
        print("TensorBoard logs are off: tensorboardX is not installed (pip install tensorboardX)", file=sys.stderr)
        return None
    return SummaryWriter(str(folder), purge_step=resume_step + 1)


def _line(record: dict) -> str:
    return strict_json.dumps(record) + "\n"
