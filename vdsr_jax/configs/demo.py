"""The embedded default: a short ×2 run on scikit-image's sample images, so it needs no data download.

It trains on photos that ship inside scikit-image and evaluates on held-out ones from the same package;
on a 2-core CPU it finishes in under 10 minutes.
"""
from vdsr_jax.configs import x234

TRAIN = "astronaut,coffee,chelsea,rocket,hubble_deep_field,immunohistochemistry,moon,page,grass,brick"
HELD_OUT = "camera,coins,clock,text"


def get_config():
    config = x234.get_config()
    config.train_data = f"skimage:{TRAIN}"
    config.train_manual_dir = ""
    config.scales = (2,)
    config.eval_sets = {"skimage_held_out": f"skimage:{HELD_OUT}"}
    config.eval_scales = (2,)
    config.batch_size = 16
    config.num_steps = 300
    config.optimizer.learning_rate = 0.1
    config.optimizer.decay_every_epochs = 1
    config.steps_per_epoch = 200
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 100
    config.log_every_steps = 10
    return config
