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
