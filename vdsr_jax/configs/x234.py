"""The paper's recipe: one network for ×2, ×3 and ×4 on the 291 images (Kim, Lee & Lee, CVPR 2016, §4)."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict(dict(
        depth=20, features=64, use_bias=True, compute_dtype="float32",
        # The paper does not say how its last layer starts; zeros make the untrained net exactly bicubic, so
        # training improves on it from the first steps instead of first undoing a random residual.
        zero_init_output=True,
    ))

    # Data: TFDS builders prepared from local folders (docs/training.md, "Data"), read without TensorFlow.
    config.data_dir = "~/tensorflow_datasets"
    config.train_data = "train291"
    config.train_manual_dir = "../shared/data/train291"  # holds T91/ and BSD200/
    config.scales = (2, 3, 4)
    config.downsizes = (1.0, 0.7, 0.5)
    config.augment = True  # random 90° rotations and flips
    config.patch_size = 41
    # Where the training pairs live (docs/training.md, "Data at scale"). "exact": every (downsize, scale) variant of
    # every image as float32 pairs on every device (the 291 images: ~1.5 GB); "pool": a device pool of exact
    # tiles of `tile_size`² that fits `device_budget_mib`, `refresh_tiles` of them replaced every
    # `refresh_every_steps` steps in the background, `tiles_per_image` cut from each decoded image; the host
    # keeps images on disk (estimate checked against `host_budget_mib`). `workers`: host threads (0: cores/2).
    # A step waits for a refresh the host has not finished: 64 tiles every 4000 steps keep a host of 30
    # tiles/s (this 2-core machine makes 45-66) 3× ahead of a 40 000 patches/s accelerator; each tile then
    # serves ~4000 patches. Lower it for fresher tiles where the host has cores to spare (training warns
    # when it waits).
    config.data = ml_collections.ConfigDict(dict(
        mode="exact", device_budget_mib=4096.0, host_budget_mib=4096.0,
        tile_size=256, tiles_per_image=8, refresh_tiles=64, refresh_every_steps=4000, workers=0,
    ))
    config.batch_size = 64

    # The paper's run: 80 epochs = 9,960 iterations of 64 patches, lr ÷10 every 20 epochs (2,490 iterations).
    # Its epoch is 124.5 iterations, so an "epoch" here is two of them: 40 × 249 = 9,960 steps, lr ÷10 every
    # 10 × 249 = 2,490. steps_per_epoch = 0 makes an epoch one pass over the non-overlapping patches of every
    # variant (1,448 steps for the 291 images; configs/x234_long.py).
    config.steps_per_epoch = 249
    config.num_epochs = 40
    config.num_steps = 0  # > 0 overrides num_epochs · steps_per_epoch
    # Minutes for the whole run (its final evaluation, images and checkpoint included), 0 = no limit. The
    # steps that fit are planned from this run's measured step and evaluation times, and the schedule keeps
    # its shape: lr ÷10 every round(decay steps × planned / configured steps) steps (vdsr_jax.budget).
    config.time_budget_minutes = 0.0

    # The factor of the batch's summed squared error in the loss; 0 means 0.5 / batch_size (the paper's ½·mean
    # over the batch of the per-patch summed squared error), resolved in training so that it follows an
    # overridden batch_size (vdsr_jax.training.loss_scale).
    config.loss_scale = 0.0
    config.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
        decay_every_epochs=10, decay_factor=0.1,
        clipping="adjustable",  # each gradient element in [-θ/γ, θ/γ]
        clip_theta=1e-4,  # not given in the paper; at lr 0.1 θ=1e-2 diverged and 1e-3 was unstable here
        clip_norm=0.4,
    ))

    # Evaluation under the paper's protocol; name -> manual_dir of a TFDS builder (or skimage:NAME,…).
    config.eval_sets = ml_collections.ConfigDict({"set5": "../shared/data/benchmarks"})  # holds Set5/
    config.eval_scales = (2, 3, 4)
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.log_every_steps = 50
    config.comparison_images = 2  # bicubic | VDSR | HR images written at the end
    return config
