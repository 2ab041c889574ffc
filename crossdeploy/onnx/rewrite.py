"""Exact ONNX graph rewrites that make a model convert cleanly for TensorFlow/TFLite."""

from __future__ import annotations

import numpy as np

from crossdeploy.onnx.graph import inferred_shapes

#: ops whose output is >= 0 whatever their input
NONNEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax", "Abs"}
#: ops whose output is >= 0 when every (data) input is
NONNEGATIVE_WHEN_INPUTS_ARE = {"Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Pad"}


def _nonnegative_tensors(model) -> set[str]:
    """Names of tensors that are >= 0 by construction, in graph (topological) order."""
    nonnegative: set[str] = set()
    for node in model.graph.node:
        data = node.input[:1] if node.op_type in ("MaxPool", "AveragePool", "Pad") else node.input
        if node.op_type in NONNEGATIVE_OPS or (node.op_type in NONNEGATIVE_WHEN_INPUTS_ARE and all(i in nonnegative for i in data)):
            nonnegative.update(node.output)
    return nonnegative


def _ceil_extra_pads(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int) -> int:
    """Extra end padding that makes floor-mode pooling give ceil-mode's output size (as PyTorch sizes it:
    the last window must start inside the input or the begin padding)."""
    span = size + begin + end - dilation * (kernel - 1) - 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + begin:
        out -= 1
    return max(0, (out - 1) * stride + dilation * (kernel - 1) + 1 - (size + begin + end))


def pad_maxpools_over_nonnegative(model) -> int:
    """Make MaxPool padding, ceil-mode's implicit end padding included, an explicit zero Pad where the
    pooled tensor cannot be negative (after a Relu, or a Concat or pool of such tensors).

    onnx2tf pads such a MaxPool with the float minimum, which full-integer TFLite calibration turns
    into an enormous quantization range (the runtime aborts preparing the next Add, or every value
    rounds to one level: GoogLeNet's ceil-mode pools). Over non-negative values every window holds at
    least one real value, so padding with 0 gives the same maximum. Returns how many MaxPools were rewritten.
    """
    import onnx
    from onnx import helper

    nonnegative = _nonnegative_tensors(model)
    shapes = inferred_shapes(model)
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "MaxPool"
            or node.input[0] not in nonnegative
            or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
        ):
            nodes.append(node)
            continue
        kernel = list(attributes["kernel_shape"])
        spatial = len(kernel)
        pads = list(attributes.get("pads") or [0] * 2 * spatial)
        if attributes.get("ceil_mode", 0):
            sizes = (shapes.get(node.input[0]) or [None] * (spatial + 2))[2:]
            if any(size is None for size in sizes):
                nodes.append(node)  # cannot size the implicit padding: leave it to the converter
                continue
            strides = list(attributes.get("strides") or [1] * spatial)
            dilations = list(attributes.get("dilations") or [1] * spatial)
            for axis in range(spatial):
                pads[spatial + axis] += _ceil_extra_pads(
                    sizes[axis], kernel[axis], strides[axis], dilations[axis], pads[axis], pads[spatial + axis]
                )
        if not any(pads):
            nodes.append(node)
            continue
        # ONNX Pad wants [N_begin, C_begin, spatial_begins..., N_end, C_end, spatial_ends...].
        full_pads = [0, 0, *pads[:spatial], 0, 0, *pads[spatial:]]
        pads_name = f"{node.name or node.output[0]}_explicit_pads"
        padded = f"{node.input[0]}_zero_padded_for_{node.name or node.output[0]}"
        model.graph.initializer.append(helper.make_tensor(pads_name, onnx.TensorProto.INT64, [len(full_pads)], full_pads))
        nodes.append(helper.make_node("Pad", [node.input[0], pads_name], [padded], mode="constant", name=f"{pads_name}_node"))
        kept = [a for a in node.attribute if a.name not in ("pads", "ceil_mode")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.input[0] = padded
        nodes.append(node)
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten


def spatial_means_to_global_pools(model) -> int:
    """Replace `ReduceMean` over the two spatial axes of an NCHW tensor (keepdims) by `GlobalAveragePool`,
    which computes exactly that.

    torch exports torchvision's average pooling as ReduceMean; when the last feature map is 1x1 (a 32-px
    input to a ResNet, CIFAR-sized models) onnx2tf cannot tell its layout from the shape, reduces over
    the batch axis and gives the SavedModel a batch of 1. GlobalAveragePool is an NCHW op to onnx2tf, so
    it converts right at any size. Returns how many were replaced.
    """
    from onnx import helper

    ranks = {name: len(shape) for name, shape in inferred_shapes(model).items()}
    replaced = 0
    for node in model.graph.node:
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attributes.get("axes") or (_constant(model, node.input[1]) if len(node.input) > 1 else None)
        axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        if attributes.get("keepdims", 1) != 1 or not axes or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        node.CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name))
        replaced += 1
    return replaced


def _constant(model, name: str):
    """The value of an initializer or a Constant node's output; None if `name` is computed."""
    from onnx import numpy_helper

    for initializer in model.graph.initializer:
        if initializer.name == name:
            return numpy_helper.to_array(initializer)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _scalar(model, name: str) -> float | None:
    value = _constant(model, name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def gelus_in_onnx2tf_order(model) -> int:
    """Reorder exact GELU, x * (0.5 * (1 + erf(x / sqrt 2))) as torch exports it, into
    (x * (1 + erf(x / sqrt 2))) * 0.5: the same product (to float rounding) in the order onnx2tf
    recognises, so it emits one GELU op (a TFLite builtin, full-integer included) instead of an Erf
    that TFLite has no builtin for. Returns how many GELUs were reordered.
    """
    import onnx
    from onnx import helper

    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(node, op_type):
        found = consumers.get(node.output[0], [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    half, sqrt2 = "gelu_one_half", "gelu_sqrt2"
    reordered = 0
    for erf in [n for n in model.graph.node if n.op_type == "Erf"]:
        div = producers.get(erf.input[0])
        add = only_consumer(erf, "Add")
        scale = only_consumer(add, "Mul") if add is not None else None
        product = only_consumer(scale, "Mul") if scale is not None else None
        if div is None or div.op_type != "Div" or product is None:
            continue
        x = div.input[0]
        if (
            abs((_scalar(model, div.input[1]) or 0) - 2**0.5) > 1e-6
            or _scalar(model, [i for i in add.input if i != erf.output[0]][0]) != 1.0
        ):
            continue
        halves = [i for i in scale.input if i != add.output[0]]
        if len(halves) != 1 or _scalar(model, halves[0]) != 0.5 or x not in product.input or scale.output[0] not in product.input:
            continue
        # scale: x * (1 + erf); product: that * 0.5, keeping product's output name
        div.input[1] = sqrt2
        scale.input[:] = [x, add.output[0]]
        product.input[:] = [scale.output[0], half]
        reordered += 1
    if reordered:
        model.graph.initializer.append(helper.make_tensor(half, onnx.TensorProto.FLOAT, [], [0.5]))
        # onnx2tf tests the divisor with `.numpy()`, which a Constant node's tensor has and an initializer lacks
        value = helper.make_tensor(sqrt2, onnx.TensorProto.FLOAT, [], [2**0.5])
        model.graph.node.insert(0, helper.make_node("Constant", [], [sqrt2], value=value, name=sqrt2))
        used = {name for node in model.graph.node for name in node.input}
        unused = [i for i in model.graph.initializer if i.name not in used]
        for initializer in unused:  # the halves the products no longer read
            model.graph.initializer.remove(initializer)
    return reordered
