"""VDSR as a serialized StableHLO artefact (`jax.export`), for running the network without its Python code.

    data = export_stablehlo(model, params)                # bytes
    exported = jax.export.deserialize(bytearray(data))    # in any process, no vdsr_jax needed
    out = exported.call(y)                                # y: float32 N×H×W×1

The artefact holds the Y→Y network (`vdsr_jax.model.VDSR`, what `TiledVDSR` runs on each window) with its
parameters baked in as constants, so it has one input. Batch, height and width are symbolic (any sizes);
the channel axis is 1. It is lowered for CPU, CUDA and TPU. Compatibility is `jax.export`'s: an artefact
can be deserialized and run by a jax up to 6 months newer, or up to 3 weeks older, than the one that
exported it (https://docs.jax.dev/en/latest/export/export.html#compatibility-guarantees).
"""
import jax
import jax.numpy as jnp

from vdsr_jax.checkpoint import validate_params
from vdsr_jax.model import VDSR

PLATFORMS = ("cpu", "cuda", "tpu")
INPUT_SHAPE = "batch, height, width, 1"  # jax.export.symbolic_shape


def export_stablehlo(model: VDSR, params: dict) -> bytes:
    """The serialized `jax.export.Exported` of y -> model.apply({'params': params}, y): input and output
    float32 batch×height×width×1 (NHWC, symbolic batch, height, width; Y in [0, 1] for the released models),
    output not clipped. CheckpointError if `params` do not fit `model`."""
    validate_params(params, model)

    def network(y):
        return model.apply({"params": params}, y)

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(INPUT_SHAPE), jnp.float32)
    return bytes(jax.export.export(jax.jit(network), platforms=PLATFORMS)(spec).serialize())
