"""VDSR as ONNX graphs (opset 17), written node by node with the `onnx` package's helpers.

Two graphs, both with dynamic batch, height and width (symbolic dimensions):

- `y_model`: the Y→Y network. Input `input`, float32 batch×1×height×width (NCHW, the bicubic-upscaled Y in
  [0, 1]); output `output`, the same shape: what `vdsr_jax.model.VDSR` gives, not clipped. `fp16=True`:
  weights, arithmetic, input and output float16.
- `pipeline_model`: what `vdsr-upscale` does to an image at an integer scale s, LR pixels in and HR pixels
  out. Input `input`: batch×3×height×width (`layout='nchw'`) or batch×height×width×3 (`'nhwc'`) RGB, uint8
  or float32 in [0, 1] (`dtype`); `channels=1` takes grey images (…×1) instead. Output `output`: the same
  layout and dtype, height and width times s. Inside, as `vdsr_jax.inference.upscale_image` has it: samples
  to [0, 1] (v / 255), MATLAB `rgb2ycbcr`, MATLAB bicubic upscaling of Y, Cb and Cr (symmetric padding of 2
  samples, then the s² fixed phase filters of `resize.phase_filters` as one grouped convolution and
  DepthToSpace), VDSR on Y, MATLAB `ycbcr2rgb`, clipping to [0, 1], and for uint8 MATLAB's rounding
  (halves up). A grey image is its own Y (no colour conversion). Images must be at least 2×2 pixels, as
  for `vdsr-upscale`. Alpha is not handled: give RGB (or grey) pixels. `fp16=True` runs the network part
  in float16 (the residual is added in float32); the input and output stay as `dtype` says.

The ONNX graph computes in float32 where `vdsr-upscale` computes colour and bicubic in float64, so a uint8
sample may differ by one level where a value lies within float32 rounding of a half (see docs/export.md for
the measured figures).

`onnx` is imported only here, and only when a graph is built (`require_onnx`).
"""
import itertools
import json

import numpy as np

from vdsr_jax.checkpoint import validate_params
from vdsr_jax.color import rgb2ycbcr, ycbcr2rgb
from vdsr_jax.errors import MissingDependency
from vdsr_jax.model import VDSR, model_spec
from vdsr_jax.resize import PHASE_TAPS, phase_filters

OPSET = 17
# The IR version that came with opset 17 (onnx 1.12): runtimes read files up to the IR version they know, so
# the newest the installed onnx writes by default would shut out older onnxruntime releases.
IR_VERSION = 8
LAYOUTS = ("nchw", "nhwc")
DTYPES = ("uint8", "float32")
CHANNELS = (3, 1)
INSTALL = 'pip install "vdsr_jax[export]"'


def require_onnx():
    """The onnx module; MissingDependency saying how to install it where it is not installed."""
    try:
        import onnx
    except ImportError:
        raise MissingDependency(f"ONNX export needs the onnx package, which is not installed: {INSTALL}") from None
    return onnx


class _Graph:
    """Nodes and constants (initializers) of one graph under construction, each output named uniquely."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.constants = [], []
        self._ids = itertools.count()

    def constant(self, array: np.ndarray, name: str = "const") -> str:
        name = f"{name}_{next(self._ids)}"
        self.constants.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, *values: int) -> str:
        return self.constant(np.array(values, np.int64), "ints")

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = f"{op.lower()}_{next(self._ids)}"
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], **attributes))
        return output

    def model(self, name: str, inputs, outputs, doc: str, metadata: dict):
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                  producer_name="vdsr_jax", doc_string=doc)
        helper.set_model_props(model, {key: str(value) for key, value in metadata.items()})
        # check_model's full check runs strict shape inference: a malformed graph fails here, not in a runtime
        self.onnx.checker.check_model(model, full_check=True)
        return model


def _network(graph: _Graph, x: str, model: VDSR, params: dict, fp16: bool, cast_inside: bool) -> str:
    """VDSR on NCHW `x` (1 channel): `depth` 3×3 convs (zero padding 1) with ReLU between them, plus `x`.
    `fp16`: weights in float16; `cast_inside`: `x` is float32 and the convs run on its float16 copy, the
    residual is added back in float32."""
    weight_dtype = np.float16 if fp16 else np.float32
    h = graph.node("Cast", [x], to=graph.onnx.TensorProto.FLOAT16) if cast_inside else x
    for i in range(model.depth):
        layer = params[f"conv_{i}"]
        # Flax kernels are HWIO, ONNX's OIHW
        inputs = [h, graph.constant(np.transpose(np.asarray(layer["kernel"]), (3, 2, 0, 1)).astype(weight_dtype),
                                    f"conv_{i}_weight")]
        if model.use_bias:
            inputs.append(graph.constant(np.asarray(layer["bias"]).astype(weight_dtype), f"conv_{i}_bias"))
        h = graph.node("Conv", inputs, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        if i < model.depth - 1:
            h = graph.node("Relu", [h])
    if cast_inside:
        h = graph.node("Cast", [h], to=graph.onnx.TensorProto.FLOAT)
    return graph.node("Add", [x, h])


def _metadata(model: VDSR, **extra) -> dict:
    return {"vdsr_jax.model": json.dumps(model_spec(model), sort_keys=True), **extra}


def y_model(model: VDSR, params: dict, fp16: bool = False):
    """The ONNX ModelProto of the Y→Y network (see the module docstring). CheckpointError if `params` do not
    fit `model`, MissingDependency without onnx."""
    onnx = require_onnx()
    validate_params(params, model)
    graph = _Graph(onnx)
    elem = onnx.TensorProto.FLOAT16 if fp16 else onnx.TensorProto.FLOAT
    shape = ["batch", 1, "height", "width"]
    out = _network(graph, "input", model, params, fp16, cast_inside=False)
    graph.nodes.append(onnx.helper.make_node("Identity", [out], ["output"]))
    doc = (f"VDSR Y->Y network: {'float16' if fp16 else 'float32'} batch x 1 x height x width in and out, "
           "Y in [0, 1] (the bicubic-upscaled luminance), output not clipped.")
    return graph.model("vdsr_y", [onnx.helper.make_tensor_value_info("input", elem, shape)],
                       [onnx.helper.make_tensor_value_info("output", elem, shape)], doc,
                       _metadata(model, precision="float16" if fp16 else "float32"))


def _affine(function) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) of a per-pixel affine map of 3 channels such as `rgb2ycbcr`: f(v) = matrix · v + offset."""
    offset = function(np.zeros(3))
    return (function(np.eye(3)) - offset).T, offset


def _colour_map(graph: _Graph, x: str, function) -> str:
    """`function` (an affine colour map) on the channels of NCHW float32 `x`, as a 1×1 convolution."""
    matrix, offset = _affine(function)
    return graph.node("Conv", [x, graph.constant(matrix[:, :, None, None].astype(np.float32), "colour"),
                               graph.constant(offset.astype(np.float32), "colour_offset")], kernel_shape=[1, 1])


def _symmetric_pad(graph: _Graph, x: str, axis: int, width: int) -> str:
    """`x` extended by `width` mirrored samples (edge repeated) at both ends of `axis` (ONNX's Pad has no
    symmetric mode): reversed slices, which work for any length of at least `width`."""
    before = graph.node("Slice", [x, graph.ints(width - 1), graph.ints(np.iinfo(np.int64).min), graph.ints(axis),
                                  graph.ints(-1)])
    after = graph.node("Slice", [x, graph.ints(-1), graph.ints(-width - 1), graph.ints(axis), graph.ints(-1)])
    return graph.node("Concat", [before, x, after], axis=axis)


def _bicubic(graph: _Graph, x: str, scale: int, channels: int) -> str:
    """MATLAB's bicubic upscaling of NCHW float32 `x` by the integer `scale`: per channel, the scale² products
    of row and column phase filters as one grouped 5×5 convolution, whose outputs DepthToSpace (CRD: channel
    c·scale² + i·scale + j goes to row phase i, column phase j of channel c) interleaves."""
    pad = PHASE_TAPS // 2
    padded = _symmetric_pad(graph, _symmetric_pad(graph, x, 2, pad), 3, pad)
    filters = phase_filters(scale)
    kernels = np.einsum("ik,jl->ijkl", filters, filters).reshape(scale * scale, 1, PHASE_TAPS, PHASE_TAPS)
    weight = graph.constant(np.tile(kernels, (channels, 1, 1, 1)).astype(np.float32), "bicubic")
    phases = graph.node("Conv", [padded, weight], kernel_shape=[PHASE_TAPS, PHASE_TAPS], group=channels)
    return graph.node("DepthToSpace", [phases], blocksize=scale, mode="CRD")


def pipeline_model(model: VDSR, params: dict, scale: int, channels: int = 3, dtype: str = "float32",
                   layout: str = "nchw", fp16: bool = False):
    """The ONNX ModelProto of the LR→HR pipeline at the integer `scale` (see the module docstring).
    ValueError for a scale that is not an integer ≥ 1 or a `channels`, `dtype` or `layout` not in CHANNELS,
    DTYPES, LAYOUTS; CheckpointError if `params` do not fit `model`; MissingDependency without onnx."""
    phase_filters(scale)  # its ValueError for a scale that is not a positive integer
    for name, value, known in (("channels", channels, CHANNELS), ("dtype", dtype, DTYPES), ("layout", layout, LAYOUTS)):
        if value not in known:
            raise ValueError(f"{name} must be one of {', '.join(map(str, known))}, got {value!r}")
    onnx = require_onnx()
    validate_params(params, model)
    graph = _Graph(onnx)
    x = "input"
    if dtype == "uint8":
        x = graph.node("Div", [graph.node("Cast", [x], to=onnx.TensorProto.FLOAT), graph.constant(np.float32(255))])
    if layout == "nhwc":
        x = graph.node("Transpose", [x], perm=[0, 3, 1, 2])
    planes = _bicubic(graph, _colour_map(graph, x, rgb2ycbcr) if channels == 3 else x, scale, channels)
    y = graph.node("Slice", [planes, graph.ints(0), graph.ints(1), graph.ints(1)]) if channels == 3 else planes
    refined = _network(graph, y, model, params, fp16, cast_inside=fp16)
    if channels == 3:
        chroma = graph.node("Slice", [planes, graph.ints(1), graph.ints(3), graph.ints(1)])
        refined = _colour_map(graph, graph.node("Concat", [refined, chroma], axis=1), ycbcr2rgb)
    out = graph.node("Clip", [refined, graph.constant(np.float32(0)), graph.constant(np.float32(1))])
    if dtype == "uint8":  # color.quantize: floor(v · 255 + ½)
        scaled = graph.node("Add", [graph.node("Mul", [out, graph.constant(np.float32(255))]),
                                    graph.constant(np.float32(0.5))])
        out = graph.node("Cast", [graph.node("Floor", [scaled])], to=onnx.TensorProto.UINT8)
    if layout == "nhwc":
        out = graph.node("Transpose", [out], perm=[0, 2, 3, 1])
    graph.nodes.append(onnx.helper.make_node("Identity", [out], ["output"]))
    elem = onnx.TensorProto.UINT8 if dtype == "uint8" else onnx.TensorProto.FLOAT

    def shape(height, width):
        return ["batch", channels, height, width] if layout == "nchw" else ["batch", height, width, channels]

    colour = "RGB" if channels == 3 else "grey"
    doc = (f"VDSR x{scale}: {colour} {dtype} {layout.upper()} LR image in, {colour} {dtype} {layout.upper()} HR "
           f"image ({scale}x height and width) out; {'[0, 255]' if dtype == 'uint8' else '[0, 1]'}; MATLAB "
           "bicubic and YCbCr as vdsr-upscale.")
    return graph.model(f"vdsr_x{scale}_pipeline",
                       [onnx.helper.make_tensor_value_info("input", elem, shape("height", "width"))],
                       [onnx.helper.make_tensor_value_info("output", elem, shape("hr_height", "hr_width"))], doc,
                       _metadata(model, scale=scale, channels=channels, dtype=dtype, layout=layout,
                                 precision="float16 network" if fp16 else "float32"))
