"""The VDSR network (Kim, Lee & Lee, CVPR 2016, §3.1): 3×3 convolutions predicting the residual of a
bicubic-upsampled image, and its description as a small dict (what checkpoints store)."""
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from vdsr_jax.errors import ConfigError

# pytorch-vdsr's init, N(0, sqrt(2 / (3·3·out_channels))): He-normal on fan-out, untruncated.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
SPEC_FIELDS = ("depth", "features", "use_bias")
COMPUTE_DTYPES = ("float32", "bfloat16")


class VDSR(nn.Module):
    """`depth` 3×3 convs (ReLU between them, zero padding) on N×H×W×C input; output = input + residual.

    Input and output: float32 N×H×W×C (C = 1, the Y channel, in [0, 1] for the released models), any H, W
    ≥ 1. Parameters are float32; `dtype` is the compute dtype (e.g. bfloat16 on accelerators); the residual
    is added in float32 so the output keeps the input's precision. `zero_init_output` starts the last conv
    at zero, so the untrained network returns its (bicubic) input exactly.
    """

    depth: int = 20
    features: int = 64
    use_bias: bool = False
    dtype: Any = jnp.float32
    zero_init_output: bool = False

    @nn.compact
    def __call__(self, x):
        x = jnp.asarray(x, jnp.float32)
        channels = x.shape[-1]
        h = x.astype(self.dtype)
        for i in range(self.depth):
            last = i == self.depth - 1
            h = nn.Conv(
                channels if last else self.features,
                (3, 3),
                padding="SAME",
                use_bias=self.use_bias,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=nn.initializers.zeros if last and self.zero_init_output else he_normal_fan_out,
                name=f"conv_{i}",
            )(h)
            if not last:
                h = nn.relu(h)
        return x + h.astype(jnp.float32)


def model_spec(model: VDSR) -> dict:
    """The JSON description of `model` that checkpoints and weight files store: depth, features, use_bias."""
    return {field: getattr(model, field) for field in SPEC_FIELDS}


def create_model(spec: Mapping) -> VDSR:
    """A VDSR from a description: `depth` (int ≥ 2), `features` (int ≥ 1), `use_bias` (bool), and optionally
    `compute_dtype` ('float32' or 'bfloat16') and `zero_init_output` (bool), as in a config's `model`
    field or a checkpoint's `model` item. ValueError naming the field that is missing or invalid."""
    try:
        depth, features, use_bias = (spec[field] for field in SPEC_FIELDS)
    except (KeyError, TypeError) as e:
        raise ValueError(f"model description {dict(spec) if isinstance(spec, Mapping) else spec!r} "
                         f"lacks {e}") from None
    for name, value, minimum in (("depth", depth, 2), ("features", features, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"model.{name} must be an integer ≥ {minimum}, not {value!r}")
    if not isinstance(use_bias, bool):
        raise ValueError(f"model.use_bias must be true or false, not {use_bias!r}")
    dtype = spec.get("compute_dtype", "float32")
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"model.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, not {dtype!r}")
    return VDSR(depth=depth, features=features, use_bias=use_bias, dtype=jnp.dtype(dtype),
                zero_init_output=bool(spec.get("zero_init_output", False)))


def model_from_config(config) -> VDSR:
    """The VDSR of `config.model` (see `create_model`); ConfigError for an invalid field."""
    try:
        return create_model(config.model)
    except ValueError as e:
        raise ConfigError(f"config.{e}" if str(e).startswith("model.") else str(e)) from None
