"""The paper's setting trained 11.6× longer, for the best model: 80 epochs of one pass over the
non-overlapping patches of all 2,616 variants of the 291 images (1,448 steps of 64 each: 115,840 steps),
lr ÷10 every 20 epochs, evaluated on Set5 and Set14.

float32 parameters and compute (`model.compute_dtype`); on NVIDIA GPUs since Ampere XLA runs float32
convolutions on TF32 tensor cores by default. With `time_budget_minutes` the run is shortened to the budget
with the same schedule shape (lr drops at ¼, ½, ¾ of the planned steps).
"""
from vdsr_jax.configs import x234


def get_config():
    config = x234.get_config()
    config.steps_per_epoch = 0  # one pass over the non-overlapping patches, computed from the data
    config.num_epochs = 80
    config.optimizer.decay_every_epochs = 20
    config.eval_sets.set14 = "../shared/data/benchmarks"  # holds Set14/
    return config
