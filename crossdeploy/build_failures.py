"""What a converting stage could not build, and why, recorded in its own outputs.

A converter that cannot handle an architecture (onnx2tf meeting an op it cannot map, TFLite's
converter refusing a graph) fails the variants it would have produced, not the pipeline: the stage
writes `failures.json` ({variant: one sentence}) into the output folder the artifact would have
been in, so DVC caches the decision with the outputs, and validate and benchmark report those
variants as failed with that sentence while every other variant still runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Iterator

FAILURES_FILE = "failures.json"

# onnx2tf prints the node it was converting when an op fails, before re-raising
_ONNX2TF_NODE = re.compile(r"onnx_op_name:\s*(\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# lines of a Keras/TensorFlow error that frame the cause rather than state it
_MLIR_OP_ERROR = re.compile(r"('[a-z_]+\.[A-Za-z0-9_]+' op [^\n]*)")
_FRAMING = re.compile(r"^(Exception encountered when calling|Call arguments received|•|for '|with input shapes)")


class ConversionFailed(Exception):
    """A converter could not produce an artifact; the message is the sentence users read."""


def write_failures(directory: Path, failures: dict[str, str]) -> None:
    """Record the folder's unbuilt variants; an empty record says every variant in it was built."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FAILURES_FILE).write_text(json.dumps(dict(sorted(failures.items())), indent=2) + "\n")


def recorded_failure(record: Path | None, variant: str) -> str | None:
    if record is None or not record.is_file():
        return None
    return json.loads(record.read_text()).get(variant)


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """The line of an exception a user can read: the first that states the cause (Keras wraps it in
    framing lines), without colour codes, cut to `limit` characters."""
    text = _ANSI.sub("", str(exc))
    mlir = _MLIR_OP_ERROR.search(text)  # TFLite's converter names the op deep inside a location dump
    if mlir:
        return mlir.group(1)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if not _FRAMING.match(line)]
    text = (causes or lines or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def captured_output() -> Iterator[io.StringIO]:
    """Keep a converter's own console output (onnx2tf prints whole tracebacks) for the reason, not the user."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def onnx2tf_failure(exc: BaseException, output: str, op_types: dict[str, str], hint: str) -> ConversionFailed:
    """One sentence naming onnx2tf, the ONNX op and node it failed on (from its log), the error, and what to try."""
    missing = getattr(exc, "name", None) or ""
    if isinstance(exc, ModuleNotFoundError) and missing.startswith("onnx2tf.ops."):
        op = missing.rsplit(".", 1)[1]
        nodes = [name for name, op_type in op_types.items() if op_type == op]
        where = f" {nodes[0]}" if nodes else ""
        return ConversionFailed(f"onnx2tf has no converter for the ONNX op {op} (node{where}); {hint}")
    nodes = _ONNX2TF_NODE.findall(_ANSI.sub("", output))
    where = f" at ONNX {op_types.get(nodes[-1], 'node')} {nodes[-1]}" if nodes else ""
    return ConversionFailed(f"onnx2tf could not convert the model{where} ({error_summary(exc)}); {hint}")
