"""PyTorch exported program -> ONNX at the requested opset, with a dynamic batch axis, checked and shape-inferred."""

from __future__ import annotations

import warnings
from pathlib import Path

from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import INPUT_NAME, MAX_BATCH, OUTPUT_NAME

BATCH_DIM = "batch"
# The oldest opset whose Conv/BatchNorm/Gemm/Resize semantics every target here (onnx2tf, TensorRT 10) accepts.
MIN_OPSET = 13
# torch's dynamo exporter emits this opset or newer only.
DYNAMO_MIN_OPSET = 18


def _name_batch_axis(model) -> None:
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM


def _splits_to_slices(model) -> int:
    """Replace each Split by one Slice per output, which computes exactly the same tensors.

    The ONNX version converter has no adapter that takes Split below opset 18 (where it gained
    `num_outputs`), so a model with a Split (ShuffleNet's channel split) could not be exported at an
    older opset; Slice has not changed since opset 13. Needs the split axis's size, which is static
    for a channel split. Returns how many Splits were replaced.
    """
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        info.name: [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
        for info in [*inferred.graph.input, *inferred.graph.value_info]
        if info.type.tensor_type.HasField("shape")
    }
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    constants.update(
        (node.output[0], numpy_helper.to_array(node.attribute[0].t))
        for node in model.graph.node
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
    )
    nodes, replaced = [], 0
    for node in model.graph.node:
        if node.op_type != "Split":
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shape = shapes.get(node.input[0])
        axis = attributes.get("axis", 0)
        if len(node.input) > 1 and node.input[1]:
            sizes = [int(v) for v in constants[node.input[1]].reshape(-1)] if node.input[1] in constants else None
        elif shape and shape[axis] is not None:
            count = attributes.get("num_outputs", len(node.output))
            step = -(-shape[axis] // count)  # ONNX: equal parts, the last one smaller
            sizes = [min(step, shape[axis] - i * step) for i in range(count)]
        else:
            sizes = None
        if sizes is None:
            nodes.append(node)  # the converter reports it
            continue
        axis_name = f"{node.name}_slice_axis"
        model.graph.initializer.append(helper.make_tensor(axis_name, onnx.TensorProto.INT64, [1], [axis]))
        start = 0
        for index, (output, size) in enumerate(zip(node.output, sizes)):
            bounds = [f"{node.name}_slice{index}_start", f"{node.name}_slice{index}_end"]
            for name, value in zip(bounds, (start, start + size)):
                model.graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.INT64, [1], [value]))
            nodes.append(helper.make_node("Slice", [node.input[0], *bounds, axis_name], [output], name=f"{node.name}_slice{index}"))
            start += size
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return replaced


#: a private domain the version converter leaves alone
_HELD = "crossdeploy.held"


def _hold_pads(model) -> bool:
    """Pad means the same in opsets 13 to 17 as in 18 once its optional `axes` input is folded into
    full-rank pads, but the version converter has no adapter for it (Swin pads its windows). Fold the
    axes, and move the Pads to a private domain the converter leaves alone; _release_pads moves them
    back. Returns whether any Pad was held."""
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in [*inferred.graph.input, *inferred.graph.value_info]
        if info.type.tensor_type.HasField("shape")
    }
    initializers = {init.name: init for init in model.graph.initializer}
    held = False
    for node in model.graph.node:
        if node.op_type != "Pad" or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.input) > 3 and node.input[3]:
            axes_init, pads_init = initializers.get(node.input[3]), initializers.get(node.input[1])
            rank = ranks.get(node.input[0])
            if axes_init is None or pads_init is None or rank is None:
                continue  # cannot fold: the converter reports it
            axes = [int(a) % rank for a in numpy_helper.to_array(axes_init)]
            pads = [int(p) for p in numpy_helper.to_array(pads_init)]
            full = [0] * (2 * rank)
            for i, axis in enumerate(axes):
                full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
            name = f"{node.name or node.output[0]}_full_pads"
            model.graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.INT64, [len(full)], full))
            node.input[1] = name
            del node.input[3:]
        node.domain = _HELD
        held = True
    if held:
        model.opset_import.append(helper.make_opsetid(_HELD, 1))
    return held


def _release_pads(model, held: bool) -> None:
    if not held:
        return
    for node in model.graph.node:
        if node.domain == _HELD:
            node.domain = ""
    kept = [o for o in model.opset_import if o.domain != _HELD]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def _convert_below_18(model, opset: int):
    """Bring a dynamo-exported graph down to `opset` with the ONNX version converter.

    Splits become Slices first (see _splits_to_slices) and Pads are held out of the conversion
    (_hold_pads). The converter moves Reduce* axes back to
    attributes but leaves opset-18's `noop_with_empty_axes`; at its default (0) dropping it changes
    nothing, otherwise the graph cannot be expressed in the older opset.
    """
    import onnx.version_converter

    _splits_to_slices(model)
    held = _hold_pads(model)
    converted = onnx.version_converter.convert_version(model, opset)
    _release_pads(converted, held)
    for node in converted.graph.node:
        if not node.op_type.startswith("Reduce"):
            continue
        for attribute in list(node.attribute):
            if attribute.name == "noop_with_empty_axes":
                if attribute.i:
                    raise ValueError(f"{node.name} needs noop_with_empty_axes=1, which exists from opset 18")
                node.attribute.remove(attribute)
    return converted


def export_onnx(program_path: Path, output: Path, *, opset: int, input_size: int) -> None:
    import onnx
    import torch

    newest = onnx.defs.onnx_opset_version()
    if opset < MIN_OPSET or opset > newest:
        raise CrossdeployError(f"export.opset {opset} cannot be produced; set export.opset between {MIN_OPSET} and {newest}.")
    program = torch.export.load(str(program_path))
    example = torch.zeros(2, 3, input_size, input_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program,
                (example,),
                dynamo=True,
                opset_version=max(opset, DYNAMO_MIN_OPSET),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},),
                external_data=False,
                verbose=False,
            )
        model = onnx_program.model_proto
        if opset < DYNAMO_MIN_OPSET:
            model = _convert_below_18(model, opset)
    except Exception as exc:
        raise CrossdeployError(f"torch.onnx.export could not produce opset {opset} for this model ({exc}); set export.opset to another version.") from None
    _name_batch_axis(model)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(output))
