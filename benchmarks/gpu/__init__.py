"""The stages of the one-call GPU run, `benchmarks/gpu_run.sh` (driver: `benchmarks.gpu.run`).

Each stage is its own process (`python -m benchmarks.gpu.<stage> WORK --until T …`), so JAX and torch never
share the GPU's memory and a stage that overruns is killed without losing the others' results:

  bench_jax    (a) environment and measured bf16 matmul rate; (b) vdsr_jax's train step, float32/TF32/bf16
  bench_torch  (b) torch_reference's step: fp32, TF32, channels_last + bf16 autocast, torch.compile
  bench_infer  (h) ×2 inference of 1920×1080 Y frames, frames/s: vdsr_jax float32/bf16, torch_reference's settings
  train_run    (c, f) `--config x234` (the paper's recipe), then `--config x234_long` for the time left, both by
               vdsr_jax.training.train_and_evaluate with a time budget; the loop's patches/s; weights*.npz
  eval_run     (d) Set5/Set14 ×2/×3/×4 of a config's weights; writes the table into their provenance
"""
