"""×2/×3/×4 in one network on DIV2K's 800 HR images (Agustsson & Timofte, 2017), what most SR work trains
on today, with the paper's recipe otherwise (Kim et al. 2016), evaluated on Set5 and Set14.

DIV2K does not fit the `exact` mode (~93 GB of float32 pairs per device), so it trains from the budgeted
tile pool (`vdsr_jax.data.pool`): 2 GiB on each device, images read from disk as needed.
"""
from vdsr_jax.configs import x234


def get_config():
    config = x234.get_config()
    config.train_data = "div2k_hr"
    config.train_manual_dir = "~/data/DIV2K"  # holds DIV2K_train_HR/ (and DIV2K_valid_HR/), unzipped
    config.eval_sets = {"set5": "../shared/data/benchmarks", "set14": "../shared/data/benchmarks"}
    config.data.mode = "pool"
    config.data.device_budget_mib = 2048.0
    config.data.host_budget_mib = 2048.0
    # One DIV2K epoch of non-overlapping patches is ~100k steps of 64; a fixed "epoch" keeps the schedule
    # readable: 80 × 5000 steps (25.6 M patches), lr ÷10 every 20.
    config.steps_per_epoch = 5000
    config.num_epochs = 80
    config.optimizer.decay_every_epochs = 20
    return config
