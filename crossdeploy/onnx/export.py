"""PyTorch exported program -> ONNX at the requested opset, with a dynamic batch axis, checked and shape-inferred."""

from __future__ import annotations

import warnings
from pathlib import Path

from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import INPUT_NAME, MAX_BATCH, OUTPUT_NAME
from crossdeploy.onnx.graph import inferred_shapes

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


#: a private domain the version converter leaves alone
_HELD = "crossdeploy.held"


def _shapes_and_constants(model):
    from onnx import numpy_helper

    return inferred_shapes(model), {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _split_sizes_as_input(node, shapes, constants, model) -> bool:
    """Split-18's `num_outputs` as Split-13's explicit sizes input (equal parts, the last one smaller);
    needs the split axis's size, which is static for a channel split."""
    import onnx
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if len(node.input) > 1 and node.input[1]:
        return node.input[1] in constants
    shape, axis = shapes.get(node.input[0]), attributes.get("axis", 0)
    if not shape or shape[axis] is None:
        return False
    count = attributes.get("num_outputs", len(node.output))
    step = -(-shape[axis] // count)
    sizes = [min(step, shape[axis] - i * step) for i in range(count)]
    name = f"{node.name or node.output[0]}_sizes"
    model.graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.INT64, [len(sizes)], sizes))
    node.input[1:] = [name]
    kept = [a for a in node.attribute if a.name != "num_outputs"]
    del node.attribute[:]
    node.attribute.extend(kept)
    return True


def _pad_axes_folded(node, shapes, constants, model) -> bool:
    """Pad-18's optional `axes` folded into Pad-13's full-rank pads."""
    import onnx
    from onnx import helper

    if len(node.input) <= 3 or not node.input[3]:
        return True
    shape = shapes.get(node.input[0])
    if node.input[3] not in constants or node.input[1] not in constants or shape is None:
        return False
    rank = len(shape)
    axes = [int(a) % rank for a in constants[node.input[3]].reshape(-1)]
    pads = [int(p) for p in constants[node.input[1]].reshape(-1)]
    full = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
    name = f"{node.name or node.output[0]}_full_pads"
    model.graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.INT64, [len(full)], full))
    node.input[1] = name
    del node.input[3:]
    return True


#: ops that changed in opset 18 only by an input or attribute the older form can express, but for which
#: the ONNX version converter has no adapter (ShuffleNet's channel Split, Swin's window Pad)
_OLDER_FORM = {"Split": _split_sizes_as_input, "Pad": _pad_axes_folded}


def _hold_for_conversion(model) -> bool:
    """Rewrite those ops into their pre-18 form and move them to a private domain the converter leaves
    alone; _release moves them back. Rewriting a Split into Slices instead converts, but onnx2tf then
    loses ShuffleNet's layout. Returns whether any op was held."""
    from onnx import helper

    shapes, constants = _shapes_and_constants(model)
    held = False
    for node in model.graph.node:
        rewrite = _OLDER_FORM.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rewrite and rewrite(node, shapes, constants, model):
            node.domain = _HELD
            held = True
    if held:
        model.opset_import.append(helper.make_opsetid(_HELD, 1))
    return held


def _release(model, held: bool) -> None:
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

    Splits and Pads are held out of the conversion in their older form (_hold_for_conversion). The converter moves Reduce* axes back to
    attributes but leaves opset-18's `noop_with_empty_axes`; at its default (0) dropping it changes
    nothing, otherwise the graph cannot be expressed in the older opset.
    """
    import onnx.version_converter

    held = _hold_for_conversion(model)
    converted = onnx.version_converter.convert_version(model, opset)
    _release(converted, held)
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
        raise CrossdeployError(
            f"torch.onnx.export could not produce opset {opset} for this model ({exc}); set export.opset to another version."
        ) from None
    _name_batch_axis(model)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(output))
