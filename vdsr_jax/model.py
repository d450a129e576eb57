"""The VDSR network: a stack of 3×3 convolutions predicting the residual of a bicubic-upsampled image."""
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

# pytorch-vdsr's init, N(0, sqrt(2 / (3·3·out_channels))): He-normal on fan-out, untruncated.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class VDSR(nn.Module):
    """`depth` 3×3 convs (ReLU between them, zero padding) on NHWC input; output = input + residual.

    Parameters are float32; `dtype` is the compute dtype (e.g. bfloat16 on accelerators). The residual is
    added in float32 so the output keeps the input's precision.
    """

    depth: int = 20
    features: int = 64
    use_bias: bool = False
    dtype: Any = jnp.float32

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
                kernel_init=he_normal_fan_out,
                name=f"conv_{i}",
            )(h)
            if not last:
                h = nn.relu(h)
        return x + h.astype(jnp.float32)
