"""Training patches (vdsr_jax.data.patches): the layout computed from shapes alone against what the resizer
produces, the counts, the size guard, and the sampler's determinism. The pairs against MATLAB's whole-image
pipeline, the per-process shares and the 8 symmetries are in test_train (slow); the crops fed to the train
step (unrotated crops of the pairs) in test_train_step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdsr_jax.data import patches
from vdsr_jax.resize import imresize


@pytest.mark.parametrize("height, width", [(37, 41), (50, 23), (64, 64)])
@pytest.mark.parametrize("downsize", [1.0, 0.9, 0.7, 0.5])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_variant_shape_is_the_resized_image_s_shape_after_modcrop(height, width, downsize, scale):
    resized = np.zeros((height, width)) if downsize == 1 else imresize(np.zeros((height, width)), downsize)
    h, w = resized.shape
    assert patches.variant_shape(height, width, downsize, scale) == (h - h % scale, w - w % scale)


def test_the_catalogue_keeps_variants_that_hold_a_patch_downsizes_outer_and_weights_by_positions():
    shapes = np.array([[30, 20], [12, 40], [8, 8]])
    cat = patches.catalogue(shapes, (2, 3), (1.0, 0.5), 10)
    expected = []
    for h, w in shapes:
        variants = []
        for d in (1.0, 0.5):
            for s in (2, 3):
                vh, vw = patches.variant_shape(h, w, d, s)
                if min(vh, vw) >= 10:
                    variants.append((d, s, vh, vw))
        expected.append(variants)
    assert cat.variants == expected
    assert [len(v) for v in cat.variants] == [3, 2, 0]  # (30, 20)·0.5 is 15×10 → ×3 modcrop 15×9: too narrow
    np.testing.assert_array_equal(cat.weights, [sum((vh - 9) * (vw - 9) for _, _, vh, vw in vs) for vs in expected])
    with pytest.raises(ValueError, match="no training image is at least 10×10"):
        patches.catalogue(np.array([[8, 8]]), (2,), (1.0,), 10)


def test_patches_per_epoch_counts_non_overlapping_patches_of_every_variant():
    rng = np.random.default_rng(0)
    images = [(rng.random((29, 40, 3)) * 255).astype(np.uint8), (rng.random((33, 17, 1)) * 255).astype(np.uint8)]
    source = patches.prepare_pairs(images, (2, 3), (1.0, 0.8), 8)
    cat = patches.catalogue(np.array([im.shape[:2] for im in images]), (2, 3), (1.0, 0.8), 8)
    expected = sum((vh // 8) * (vw // 8) for vs in cat.variants for _, _, vh, vw in vs)
    assert patches.patches_per_epoch(source, 8) == patches.patches_per_epoch(cat, 8) == expected
    sizes = source.heights.astype(np.int64) * source.widths
    np.testing.assert_array_equal(source.offsets, np.concatenate([[0], np.cumsum(sizes)[:-1]]))
    assert source.inputs.shape == source.targets.shape == (sizes.sum(),)


def test_a_training_set_over_2_31_pixels_is_refused_before_allocating():
    cat = patches.Catalogue(np.array([[50000, 50000]]), [[(1.0, 2, 50000, 50000)]], np.array([1.0]))
    with pytest.raises(ValueError, match="exceeds 2\\^31 pixels"):
        patches.prepare_share([None], cat)


def test_patch_i_depends_only_on_the_key_and_i():
    rng = np.random.default_rng(2)
    source = patches.prepare_pairs([(rng.random((24, 27, 3)) * 255).astype(np.uint8)], (2,), (1.0,), 6)
    device = jax.device_put(source)
    key = jax.random.key(4)
    all_ = [np.asarray(a) for a in patches.sample_patches(device, key, jnp.arange(16), 6)]
    some = [np.asarray(a) for a in patches.sample_patches(device, key, jnp.array([11, 3]), 6)]
    for a, s in zip(all_, some):
        np.testing.assert_array_equal(s, a[[11, 3]])
        assert a.shape == (16, 6, 6, 1) and a.dtype == np.float32
