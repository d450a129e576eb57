"""Peak RSS and frames/s of `upscale` on a 10-frame and a 300-frame clip of the same size (issue 13).

    python benchmarks/video_memory.py [--size 144x180] [--scale 2] [--depth 20]

Each clip (moving shapes, H.264, with AAC audio) is upscaled in a fresh process by `vdsr_jax.upscale` with a
random VDSR of the given depth (weights do not change the cost); the child's peak RSS comes from
getrusage(RUSAGE_CHILDREN). Streaming holds, when the two peaks are within 10 % of each other.
"""
import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import resource, sys, time
from vdsr_jax import upscale
start = time.perf_counter()
status = upscale.main(sys.argv[1:])
elapsed = time.perf_counter() - start
print(f"RESULT {status} {elapsed:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
"""


def make_clip(path: Path, frames: int, height: int, width: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_video import write_clip

    write_clip(path, count=frames, size=(height, width), codec="libx264", pix_fmt="yuv420p", options={"crf": "18"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="144x180", help="HxW of the clip (Weizmann: 144x180)")
    parser.add_argument("--scale", default="2")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--frames", default="10,300")
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
        for count in map(int, args.frames.split(",")):
            clip = tmp / f"clip{count}.mp4"
            make_clip(clip, count, height, width)
            done = subprocess.run([sys.executable, "-c", CHILD, str(clip), "--checkpoint", str(ckpt), "--scale",
                                   args.scale, "-o", str(tmp / f"out{count}.mp4")],
                                  cwd=ROOT, capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT")), None)
            if line is None:
                sys.exit(f"child failed: {done.stderr[-2000:]}")
            _, status, elapsed, rss_kb = line.split()
            print(f"{count:4d} frames {width}x{height} x{args.scale}: peak RSS {int(rss_kb) / 1024:.0f} MiB, "
                  f"{float(elapsed):.1f} s ({count / float(elapsed):.2f} frames/s incl. compile), status {status}")


if __name__ == "__main__":
    main()
