"""Tiled inference against whole-image inference (Flax) and the torch reference with the same weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import needs_torch

from vdsr_jax import checkpoint
from vdsr_jax.torch_weights import flax_to_torch
from vdsr_jax.inference import TiledVDSR, tile_grid
from vdsr_jax.model import VDSR


def smooth_image(height, width, seed=0):
    """A Y image with structure at several scales (random noise alone would be an unusual input)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / 17.0
    return (0.5 + 0.3 * np.sin(yy + 2 * np.cos(xx)) + 0.05 * rng.standard_normal((height, width))).astype(np.float32)


def whole_image(model, params, y):
    return np.asarray(model.apply({"params": params}, jnp.asarray(y)[None, ..., None]))[0, ..., 0]


@pytest.mark.parametrize("height,width,tile", [(150, 131, 64), (61, 200, 512), (45, 47, 45), (1000, 577, 512)])
def test_grid_covers_image_once_with_margins(height, width, tile):
    margin = 10
    covered = np.zeros((height, width), int)
    grid = tile_grid(height, width, tile, margin)
    for t in grid:
        covered[t.core] += 1
        for window, core, length in zip(t.window, t.core, (height, width)):
            assert 0 <= window.start and window.stop <= length
            assert window.start == 0 or core.start - window.start >= margin
            assert window.stop == length or window.stop - core.stop >= margin
    assert (covered == 1).all()
    for axis in (0, 1):  # one window size per axis, never above the tile size
        sizes = {t.window[axis].stop - t.window[axis].start for t in grid}
        assert len(sizes) == 1 and sizes.pop() <= tile


@pytest.fixture(scope="module")
def pretrained(pretrained_checkpoint):
    return checkpoint.load_model(pretrained_checkpoint)


@pytest.mark.parametrize("tile", [64, 512])  # many tiles; one image smaller than a tile, padded
def test_tiled_equals_whole_image_and_torch(pretrained, tile):
    model, params = pretrained
    y = smooth_image(150, 131)
    tiled = TiledVDSR(model, params, tile=tile)(y)
    np.testing.assert_allclose(tiled, whole_image(model, params, y), atol=1e-5, rtol=0)

    torch = needs_torch()
    import torch_reference

    net = torch_reference.Net()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in flax_to_torch(jax.device_get(params)).items()})
    with torch.no_grad():
        reference = net(torch.from_numpy(y)[None, None]).numpy()[0, 0]
    np.testing.assert_allclose(tiled, reference, atol=1e-4, rtol=0)


def test_one_compilation_for_all_tiles_and_same_shape_images():
    model = VDSR(depth=3, features=4)  # a description no other test uses, so the compile cache starts empty
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    net = TiledVDSR(model, params, tile=32)
    first, second, third = smooth_image(90, 70, 1), smooth_image(90, 70, 2), smooth_image(100, 64, 3)
    assert len(net.grid(*first.shape)) > 4
    for y in (first, second, third):  # all windows are 32×32
        np.testing.assert_allclose(net(y), whole_image(model, params, y), atol=1e-5, rtol=0)
    assert net.compiled._cache_size() == 1


def test_tile_must_exceed_receptive_field(pretrained):
    with pytest.raises(ValueError, match="receptive field"):
        TiledVDSR(*pretrained, tile=40)
