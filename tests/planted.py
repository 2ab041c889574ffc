"""Planted defects: ONNX files with a model's inputs, outputs and dynamic batch that answer wrongly, and damage
to logits and weights, for the tests that show each gate catching them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _io(like: Path) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto, int]:
    model = onnx.load(str(like), load_external_data=False)
    output = model.graph.output[0]
    classes = output.type.tensor_type.shape.dim[1].dim_value
    return model.graph.input[0], output, classes


def answer_regardless(like: Path, out: Path, logits: np.ndarray, *, echo: float = 0.0) -> Path:
    """An ONNX model shaped like `like` that answers every image with `logits` (input-blind), plus `echo` times
    the mean of its pixels in every logit (echo > 0: outputs that barely follow the input)."""
    images, output, classes = _io(like)
    vector = np.asarray(logits, dtype=np.float32).reshape(1, classes)
    nodes = [
        helper.make_node("Shape", [images.name], ["batch"], start=0, end=1),
        helper.make_node("Concat", ["batch", "classes"], ["shape"], axis=0),
        helper.make_node("Expand", ["answer", "shape"], ["answers"]),
        helper.make_node("ReduceMean", [images.name], ["pixel_mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["pixel_mean", "axis1"], ["pixel_column"]),
        helper.make_node("Mul", ["pixel_column", "echo"], ["echoed"]),
        helper.make_node("Add", ["answers", "echoed"], [output.name]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([classes], np.int64), "classes"),
        numpy_helper.from_array(vector, "answer"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(echo, np.float32), "echo"),
    ]
    graph = helper.make_graph(nodes, "planted", [images], [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def damage_weights(path: Path, out: Path, fraction: float = 0.25, seed: int = 0) -> Path:
    """The same graph with noise of `fraction` of each tensor's mean magnitude added to every float (FP32 or FP16)
    convolution and matrix weight of 2 or more dimensions (an INT8 QDQ model's quantized weights are damaged in their integer
    steps, by the same fraction of their mean magnitude)."""
    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    for initializer in model.graph.initializer:
        weights = numpy_helper.to_array(initializer)
        if weights.ndim < 2 or weights.size < 16:
            continue
        if initializer.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            noise = fraction * np.abs(weights.astype(np.float32)).mean() * rng.standard_normal(weights.shape)
            damaged = (weights + noise).astype(weights.dtype)
        elif initializer.data_type == TensorProto.INT8:
            noise = fraction * np.abs(weights.astype(np.float32)).mean() * rng.standard_normal(weights.shape)
            damaged = np.clip(np.round(weights + noise), -127, 127).astype(np.int8)
        else:
            continue
        initializer.CopyFrom(numpy_helper.from_array(damaged, initializer.name))
    onnx.save(model, str(out))
    return out


def noise_20pct(reference: np.ndarray, seed: int = 0) -> np.ndarray:
    """The reference's logits plus noise of 20 % of their image-to-image spread."""
    spread = float(np.sqrt(np.mean((reference - reference.mean(0)) ** 2)))
    return (reference + np.random.default_rng(seed).normal(0, 0.2 * spread, reference.shape)).astype(np.float32)


def shuffled(reference: np.ndarray) -> np.ndarray:
    """Every image gets another image's logits."""
    return np.roll(reference, 1, axis=0)
