"""vdsr_jax against torch_reference (pytorch-vdsr), the independent expectation: forward pass, gradients,
optimiser steps (global-norm and adjustable clipping, step schedule) and the published weights."""
import copy
import types

import jax
import numpy as np
import pytest

from conftest import needs_torch  # noqa: E402 - before any torch import

torch = needs_torch()
from PIL import Image
from torch import nn

import torch_reference
from conftest import BENCHMARKS, PRETRAINED, require
from vdsr_jax import checkpoint, optim, torch_weights
from vdsr_jax.color import rgb2y
from vdsr_jax.inference import TiledVDSR
from vdsr_jax.metrics import psnr
from vdsr_jax.protocol import evaluate_image
from vdsr_jax.resize import imresize, modcrop
from vdsr_jax.train_step import TrainState, data_mesh, make_train_step, replicated, summed_squared_error

BASE_LR = 0.1
# FLOAT64: gradients and training steps are compared with torch run in float64. A ReLU input within
# float32 rounding of zero (not rare among the ~10^5 units of a batch) can fall on different sides in two
# float32 implementations and change the gradients of all layers below it by ~1 %: torch in float32 does
# so for the batch of the gradient test. Against float64, vdsr_jax's float32 gradients differ by ~1e-6.


def torch_net(seed: int) -> torch_reference.Net:
    torch.manual_seed(seed)
    return torch_reference.Net()


def converted(net: nn.Module):
    """(flax params, VDSR) holding `net`'s current weights."""
    return torch_weights.torch_to_flax({k: v.detach().numpy().copy() for k, v in net.state_dict().items()})[:2]


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def as_torch_layout(flax_tree) -> dict:
    """A Flax parameter-shaped tree (params, grads) as torch-named OIHW numpy arrays."""
    return torch_weights.flax_to_torch(jax.tree.map(np.asarray, flax_tree))


def batch(rng, n=2, h=12, w=12):
    return rng.random((n, 1, h, w), dtype=np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """torch's small-tensor ops on a shared, busy CPU run many times faster on one thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def seeded():
    net = torch_net(0)
    params, model = converted(net)
    return net, model, params


# ---------------------------------------------------------------- forward and gradients


@pytest.mark.parametrize("n,h,w", [(1, 17, 23), (3, 41, 41), (1, 1, 1)])
def test_forward_matches_torch(seeded, n, h, w):
    net, model, params = seeded
    x = batch(np.random.default_rng(h), n, h, w)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = np.moveaxis(np.asarray(model.apply({"params": params}, nhwc(x))), -1, 1)
    assert got.shape == expected.shape
    if h * w > 1:  # (a lone pixel sees only centre taps, and this random net's ReLUs all die there)
        assert np.abs(expected - x).max() > 0.1  # a real residual, not the identity
    assert np.abs(got - expected).max() <= 1e-5


def test_gradients_of_summed_mse_match_torch(seeded):
    net, model, params = seeded
    net = copy.deepcopy(net).double()  # see FLOAT64
    rng = np.random.default_rng(1)
    x, y = batch(rng, 2, 13, 11), batch(rng, 2, 13, 11)
    torch_loss = nn.MSELoss(reduction="sum")(net(torch.from_numpy(x).double()), torch.from_numpy(y).double())
    torch_loss.backward()
    expected = {name: p.grad.numpy() for name, p in net.named_parameters()}

    loss, grads = jax.value_and_grad(summed_squared_error)(params, model.apply, nhwc(x), nhwc(y))
    got = as_torch_layout(grads)
    assert got.keys() == expected.keys() and len(got) == 20
    assert relative(np.asarray(loss), torch_loss.detach().numpy()) <= 1e-5
    for name in expected:
        assert relative(got[name], expected[name]) <= 1e-4, name


# ---------------------------------------------------------------- optimiser steps


def optimizer_config(clipping: str, clip_theta: float = 0.01, weight_decay: float = 1e-4):
    """Decay ×0.1 every 2 epochs of one step: lr 0.1, 0.1, 0.01, 0.01, 0.001 over five steps."""
    return types.SimpleNamespace(optimizer=types.SimpleNamespace(
        learning_rate=BASE_LR, decay_every_epochs=2, decay_factor=0.1, clipping=clipping, clip_norm=0.4,
        clip_theta=clip_theta, weight_decay=weight_decay, momentum=0.9))


def torch_lr(step: int) -> float:
    return torch_reference.learning_rate(epoch=step, base_lr=BASE_LR, step=2)


@pytest.mark.parametrize("clipping", ["global_norm", "adjustable"])
def test_optimizer_against_numpy(clipping):
    """make_optimizer = clip, then add decay, then momentum SGD at the scheduled lr, written out in numpy
    (the decay is large here so that applying it before the clipping would show)."""
    config = optimizer_config(clipping, clip_theta=0.05, weight_decay=0.05)
    tx = optim.make_optimizer(config, steps_per_epoch=1)
    rng = np.random.default_rng(6)
    params = {"a": rng.standard_normal((3, 4), np.float32), "b": rng.standard_normal(5, np.float32)}
    state = tx.init(params)
    momentum = {k: np.zeros(v.shape) for k, v in params.items()}
    for step in range(4):
        grads = {k: 2 * rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        updates, state = tx.update(grads, state, params)
        lr = torch_lr(step)
        if clipping == "global_norm":
            norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
            assert norm > 0.4
            clipped = {k: g * 0.4 / norm for k, g in grads.items()}
        else:  # the paper: each element into [-θ/γ, θ/γ]; ±0.5 while lr = 0.1, then ±5
            clipped = {k: np.clip(g, -0.05 / lr, 0.05 / lr) for k, g in grads.items()}
            if step == 0:
                assert 0 < np.mean(clipped["a"] != grads["a"]) < 1
        for k in params:
            momentum[k] = 0.9 * momentum[k] + clipped[k] + 0.05 * params[k]
            expected = -lr * momentum[k]
            np.testing.assert_allclose(updates[k], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def jax_training(config):
    """(optimizer, jitted train step on a 1-device mesh, that mesh)."""
    mesh = data_mesh(jax.devices()[:1])
    return optim.make_optimizer(config, steps_per_epoch=1), make_train_step(mesh), mesh


def run_both(training, torch_step, seed, batches):
    """Run vdsr_jax's train step and `torch_step(net, optimizer, x, y, lr)` on the same NCHW batches from
    the same weights; returns (initial, torch-trained, jax-trained) weights in torch layout and both lists
    of losses."""
    tx, step, mesh = training
    net = torch_net(seed)
    params, model = converted(net)
    net.double()  # see FLOAT64
    initial = as_torch_layout(params)
    # placed as the step returns it, so that the step compiles once
    state = jax.device_put(TrainState.create(apply_fn=model.apply, params=params, tx=tx), replicated(mesh))
    optimizer = torch_reference.make_optimizer(net, lr=BASE_LR, momentum=0.9, weight_decay=1e-4)
    jax_losses, torch_losses = [], []
    for i, (x, y) in enumerate(batches):
        state, loss = step(state, nhwc(x), nhwc(y))
        jax_losses.append(float(loss))
        torch_losses.append(torch_step(net, optimizer, torch.from_numpy(x).double(),
                                       torch.from_numpy(y).double(), torch_lr(i)))
    trained = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return initial, trained, as_torch_layout(state.params), jax_losses, torch_losses


def assert_same_training(initial, expected, got, jax_losses, torch_losses):
    np.testing.assert_allclose(jax_losses, torch_losses, rtol=1e-4)
    for name in expected:
        assert relative(got[name], expected[name]) <= 1e-4, name
        # The updates themselves agree, not only the (much larger) weights: a wrong lr, clipping or
        # momentum is off by a large fraction of them. (Not elementwise: float32 rounds the small updates,
        # and a ReLU input within rounding of zero may change a few gradient elements, see FLOAT64.)
        change = expected[name] - initial[name]
        assert np.linalg.norm(got[name] - expected[name]) <= 1e-2 * np.linalg.norm(change), name


def dark(rng, scale=0.005):
    """Inputs and targets in [0, scale): VDSR has no biases, so its gradients shrink with scale²."""
    return [(scale * batch(rng), scale * batch(rng)) for _ in range(5)]


@pytest.fixture(scope="module")
def global_norm_training():
    return jax_training(optimizer_config("global_norm"))


@pytest.fixture
def recorded_norms(monkeypatch):
    """Global gradient norms seen by torch_reference.train_step's clip_grad_norm_."""
    norms, clip = [], torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        norms.append(float(clip(parameters, max_norm, *args, **kwargs)))
        return norms[-1]

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    return norms


@pytest.mark.parametrize("clipped", [True, False])
def test_five_steps_with_global_norm_clipping(clipped, global_norm_training, recorded_norms):
    rng = np.random.default_rng(2)
    # unrelated targets give huge gradients; dark patches (a tiny residual) stay below the clip norm
    batches = [(batch(rng), batch(rng)) for _ in range(5)] if clipped else dark(rng)
    results = run_both(global_norm_training, torch_reference.train_step, seed=3, batches=batches)
    assert len(recorded_norms) == 5
    assert min(recorded_norms) > 0.4 if clipped else max(recorded_norms) < 0.4
    assert_same_training(*results)


def clamped_torch_step(theta: float, clipped_counts: list):
    """torch_reference.train_step with the paper's clipping (clamp each element to ±θ/lr) in place of
    clip_grad_norm_; counts the clamped elements."""

    def step(model, optimizer, inputs, targets, lr):
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = nn.MSELoss(reduction="sum")(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        clipped_counts.append(sum(int((p.grad.abs() > theta / lr).sum()) for p in model.parameters()))
        for p in model.parameters():
            p.grad.clamp_(-theta / lr, theta / lr)
        optimizer.step()
        return float(loss.detach())

    return step


def test_adjustable_clipping_matches_torch_with_clamped_grads():
    theta, clipped_counts = 1e-5, []  # bound θ/lr = 1e-4, then 1e-3 once the lr drops at the third step
    training = jax_training(optimizer_config("adjustable", clip_theta=theta))
    batches = dark(np.random.default_rng(7), scale=0.01)[:3]
    results = run_both(training, clamped_torch_step(theta, clipped_counts), seed=8, batches=batches)
    assert min(clipped_counts[:2]) > 0  # the clipping was active
    assert_same_training(*results)


# ---------------------------------------------------------------- published weights on a real image


def test_pretrained_weights_on_bird_match_torch(pretrained_checkpoint):
    rgb = np.asarray(Image.open(require(BENCHMARKS / "Set5" / "bird.png")).convert("RGB"), np.float64) / 255
    hr = modcrop(rgb2y(rgb), 2)  # Set5's images are colour: Y of MATLAB's rgb2ycbcr
    bicubic = imresize(imresize(hr, 1 / 2), 2).astype(np.float32)
    assert bicubic.shape == hr.shape

    model, params = checkpoint.load_model(pretrained_checkpoint)
    ours = np.asarray(jax.jit(model.apply)({"params": params}, bicubic[None, :, :, None]))[0, :, :, 0]

    net = torch_reference.Net()
    net.load_state_dict(torch_weights.read_torch_file(PRETRAINED)[0])
    with torch.no_grad():
        theirs = net(torch.from_numpy(bicubic[None, None])).numpy()[0, 0]
    assert np.abs(ours - theirs).max() <= 1e-4
    # and these are the trained weights: the output is closer to the original than bicubic is
    assert np.mean((ours - hr) ** 2) < 0.8 * np.mean((bicubic - hr) ** 2)


@pytest.mark.slow
def test_grey_set14_bridge_through_the_protocol_matches_torch_on_the_scripts_path(pretrained_checkpoint):
    """The protocol on a one-channel image (Set14's bridge) equals, to 0.005 dB, the MATLAB scripts' path for
    such an image computed independently: Y = v/255, numpy bicubic, torch_reference's network."""
    path = require(BENCHMARKS / "Set14" / "bridge.png")
    grey = np.asarray(Image.open(path))
    assert grey.ndim == 2
    hr = modcrop(grey / 255.0, 2)
    bicubic = imresize(imresize(hr, 1 / 2), 2)
    net = torch_reference.Net()
    net.load_state_dict(torch_weights.read_torch_file(PRETRAINED)[0])
    with torch.no_grad():
        theirs = net(torch.from_numpy(bicubic[None, None].astype(np.float32))).numpy()[0, 0]
    expected = psnr(hr * 255, np.clip(theirs, 0, 1) * 255, shave=2)

    result = evaluate_image(TiledVDSR(*checkpoint.load_model(pretrained_checkpoint)), grey[..., None], 2)
    assert result["vdsr_psnr"] == pytest.approx(expected, abs=0.005)
    assert result["bicubic_psnr"] == pytest.approx(psnr(hr * 255, bicubic * 255, shave=2), abs=1e-9)
