"""pytorch-vdsr's hyper-parameters: no biases, summed loss, global-norm clipping 0.4, batch 128, lr ÷10
every 10 of 50 epochs."""
from vdsr_jax.configs import x234


def get_config():
    config = x234.get_config()
    config.model.use_bias = False
    config.model.zero_init_output = False
    config.batch_size = 128
    config.steps_per_epoch = 0  # an epoch: one pass over the non-overlapping patches
    config.num_epochs = 50
    config.loss_scale = 1.0
    config.optimizer.decay_every_epochs = 10
    config.optimizer.clipping = "global_norm"
    config.optimizer.clip_norm = 0.4
    return config
