"""The stages of the one-call GPU run, `benchmarks/gpu_run.sh` (driver: `benchmarks.gpu.run`).

Each stage is its own process (`python -m benchmarks.gpu.<stage> WORK --until T …`), so JAX and torch never
share the GPU's memory and a stage that overruns is killed without losing the others' results:

  bench_jax    (a) environment and measured bf16 matmul rate; (b) vdsr_jax's train step, float32/TF32/bf16
  bench_torch  (b) torch_reference's step: fp32, TF32, channels_last + bf16 autocast, torch.compile
  prep         the training pairs of the packed 291 images (CPU, in parallel, while the benchmarks run)
  train_run    (c, f) vdsr_jax.configs.x234 scaled to the time left; the loop's own patches/s; weights.npz
  eval_run     (d) Set5/Set14 ×2/×3/×4 of weights.npz; writes the table into its provenance
"""
