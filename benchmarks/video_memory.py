"""Peak RSS and frames/s of `upscale` on a 10-frame and a 300-frame clip of the same size (issue 13).

    python benchmarks/video_memory.py [--size 72x90] [--scale 2] [--depth 20] [--features 16]
                                      [--formats mp4,gif] [--frames 10,300] [--trace 50]

Each clip (moving shapes: H.264 with AAC audio in .mp4, else an animation of 40 ms frames) is upscaled
into the same format in a fresh process by `vdsr_jax.upscale_files`, with a random VDSR of the given depth and
width (weights do not change the cost); the child's peak RSS comes from getrusage(RUSAGE_SELF), frames/s
include compilation. Streaming holds when the two peaks of a format are within 10 % of each other.
`--trace N` also prints the child's RSS after every N-th frame (from /proc, Linux), to see where any
growth happens.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_video import moving_shapes, write_clip  # noqa: E402 - the tests' clip generator

CHILD = """
import os, resource, sys, time
import tqdm
from vdsr_jax import upscale_files
every = int(sys.argv.pop(1))
if every:  # RSS after every N-th frame: the (frame) progress bar is updated once a frame, shown or not
    page, frames, update = os.sysconf("SC_PAGE_SIZE"), [0], tqdm.tqdm.update
    def traced(self, n=1):
        frames[0] += n
        if frames[0] % every == 0:
            with open("/proc/self/statm") as statm:
                print(f"TRACE {frames[0]} {int(statm.read().split()[1]) * page / 2**20:.0f}", flush=True)
        return update(self, n)
    tqdm.tqdm.update = traced
start = time.perf_counter()
status = upscale_files.main(sys.argv[1:])
elapsed = time.perf_counter() - start
print(f"RESULT {status} {elapsed:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
"""


def make_clip(path: Path, frames: int, height: int, width: int) -> None:
    if path.suffix != ".mp4":  # an animation
        images = [Image.fromarray(f) for f in moving_shapes(frames, height, width)]
        images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
    else:
        write_clip(path, count=frames, size=(height, width), codec="libx264", pix_fmt="yuv420p",
                   options={"crf": "18"})


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="72x90", help="HxW of the clip (72x90; Weizmann: 144x180)")
    parser.add_argument("--scale", default="2")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--formats", default="mp4,gif", help="clip and output formats: mp4, gif, png, webp")
    parser.add_argument("--frames", default="10,300")
    parser.add_argument("--trace", type=int, default=0, help="print RSS after every N-th frame (0: no)")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    import jax
    import jax.numpy as jnp

    from vdsr_jax import checkpoint
    from vdsr_jax.model import VDSR

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = VDSR(depth=args.depth, features=args.features)
        params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
        ckpt = checkpoint.save_model(tmp / "ckpt", params, model)
        for fmt in args.formats.split(","):
            peaks = []
            for count in map(int, args.frames.split(",")):
                clip = tmp / f"clip{count}.{fmt}"
                make_clip(clip, count, height, width)
                load_before = load_average()
                done = subprocess.run([sys.executable, "-c", CHILD, str(args.trace), str(clip), "--checkpoint",
                                       str(ckpt), "--scale", args.scale, "-o", str(tmp / f"out{count}.{fmt}")],
                                      cwd=ROOT, capture_output=True, text=True)
                lines = done.stdout.splitlines()
                result = next((line for line in lines if line.startswith("RESULT")), None)
                if result is None:
                    sys.exit(f"child failed: {done.stderr[-2000:]}")
                _, status, elapsed, rss_kb = result.split()
                peaks.append(int(rss_kb) / 1024)
                trace = [line.split()[1:] for line in lines if line.startswith("TRACE")]
                growth = f" (+{100 * (peaks[-1] / peaks[0] - 1):.1f} % over {peaks[0]:.0f})" if len(peaks) > 1 else ""
                print(f"{fmt} {count:4d} frames {width}x{height} x{args.scale}, depth {args.depth}/{args.features}: "
                      f"peak RSS {peaks[-1]:.0f} MiB{growth}, {float(elapsed):.1f} s "
                      f"({count / float(elapsed):.2f} frames/s incl. compile), status {status}, "
                      f"load {load_before} -> {load_average()}", flush=True)
                if trace:
                    print("   RSS MiB after frame " + ", ".join(f"{n}: {rss}" for n, rss in trace), flush=True)


if __name__ == "__main__":
    main()
