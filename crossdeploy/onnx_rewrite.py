"""Exact ONNX graph rewrites that make a model convert cleanly for TensorFlow/TFLite."""

from __future__ import annotations

NONNEGATIVE_PRODUCERS = {"Relu"}


def pad_maxpools_after_relu(model) -> int:
    """Move MaxPool padding into an explicit zero Pad where the pooled tensor comes from a Relu.

    onnx2tf pads such a MaxPool with -inf, which full-integer TFLite calibration turns into an
    infinite quantization range (the runtime aborts preparing the next Add). After a Relu every
    value is >= 0 and each window holds at least one real value, so padding with 0 gives the
    same maximum. Returns how many MaxPools were rewritten.
    """
    import onnx
    from onnx import helper

    producers = {out: node for node in model.graph.node for out in node.output}
    nodes, rewritten = [], 0
    for node in model.graph.node:
        pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), None)
        producer = producers.get(node.input[0]) if node.input else None
        if node.op_type != "MaxPool" or not pads or not any(pads) or producer is None or producer.op_type not in NONNEGATIVE_PRODUCERS:
            nodes.append(node)
            continue
        spatial = len(pads) // 2
        # ONNX Pad wants [N_begin, C_begin, spatial_begins..., N_end, C_end, spatial_ends...].
        full_pads = [0, 0, *pads[:spatial], 0, 0, *pads[spatial:]]
        pads_name = f"{node.name or node.output[0]}_explicit_pads"
        padded = f"{node.input[0]}_zero_padded_for_{node.name or node.output[0]}"
        model.graph.initializer.append(helper.make_tensor(pads_name, onnx.TensorProto.INT64, [len(full_pads)], full_pads))
        nodes.append(helper.make_node("Pad", [node.input[0], pads_name], [padded], mode="constant", name=f"{pads_name}_node"))
        for attribute in node.attribute:
            if attribute.name == "pads":
                attribute.ints[:] = [0] * len(pads)
        node.input[0] = padded
        nodes.append(node)
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten



def _constant_ints(model, name: str) -> list[int] | None:
    from onnx import numpy_helper

    for initializer in model.graph.initializer:
        if initializer.name == name:
            return [int(v) for v in numpy_helper.to_array(initializer).reshape(-1)]
    return None


def spatial_means_to_global_pools(model) -> int:
    """Replace `ReduceMean` over the two spatial axes of an NCHW tensor (keepdims) by `GlobalAveragePool`,
    which computes exactly that.

    torch exports torchvision's average pooling as ReduceMean; when the last feature map is 1x1 (a 32-px
    input to a ResNet, CIFAR-sized models) onnx2tf cannot tell its layout from the shape, reduces over
    the batch axis and gives the SavedModel a batch of 1. GlobalAveragePool is an NCHW op to onnx2tf, so
    it converts right at any size. Returns how many were replaced.
    """
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in [*inferred.graph.input, *inferred.graph.value_info]
        if info.type.tensor_type.HasField("shape")
    }
    replaced = 0
    for node in model.graph.node:
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attributes.get("axes") or (_constant_ints(model, node.input[1]) if len(node.input) > 1 else None)
        if attributes.get("keepdims", 1) != 1 or not axes or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        node.CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name))
        replaced += 1
    return replaced
