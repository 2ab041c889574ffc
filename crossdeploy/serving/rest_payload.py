"""TF Serving's REST predict format (also KServe's V1 protocol), decoded and encoded.

Row format: {"signature_name": ..., "instances": [row, ...]}, answered with {"predictions": [...]}.
Columnar format: {"inputs": value or {name: value}}, answered with {"outputs": ...}.
String inputs take {"b64": "..."} objects, as TF Serving's REST API does.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossdeploy.layout import SIGNATURE


class RequestError(ValueError):
    """A malformed request; the message says what to change, and the server answers 400."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str  # "float32" or "string"
    sample_shape: tuple[int, ...]  # without the batch dimension


def _b64(value: Any, where: str) -> bytes:
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
            raise RequestError(f"{where}: the b64 value is not valid base64.") from None
    if isinstance(value, str):
        return value.encode()
    raise RequestError(f'{where}: expected {{"b64": "<base64>"}} or a string, got {type(value).__name__}.')


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _holds_boolean(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            return True
        if isinstance(item, list):
            stack.extend(item)
    return False


def _tensor(values: list[Any], spec: InputSpec, check_booleans: bool) -> np.ndarray:
    if spec.dtype == "string":
        return np.asarray([_b64(v, spec.name) for v in values], dtype=object)
    # numpy takes true among numbers as 1.0; the walk over exactly the values converted costs its time
    # only where the caller saw "true" or "false" in the body
    if check_booleans and _holds_boolean(values):
        raise RequestError(f"{spec.name}: float inputs take numbers only; they hold true or false.")
    # numpy's own float32 conversion would take null as NaN, true as 1.0 and "NaN" as NaN: inferring
    # the type first lets numbers alone through
    try:
        inferred = np.asarray(values)
    except ValueError:  # ragged rows
        inferred = None
    if inferred is None or inferred.dtype.kind not in "iuf":
        raise RequestError(
            f"{spec.name}: expected numbers in a regular array of samples shaped {list(spec.sample_shape)}; "
            "got values that are not numbers (null, true, strings) or rows of different lengths."
        ) from None
    if inferred.shape[1:] != spec.sample_shape:
        raise RequestError(f"{spec.name}: expected samples of shape {list(spec.sample_shape)}, got {list(inferred.shape[1:])}.")
    if inferred.dtype.kind == "f":
        check_float_values(inferred, spec)
    return inferred.astype(np.float32)


def check_float_values(values: np.ndarray, spec: InputSpec) -> None:
    """RequestError unless every value is a finite number within float32's range."""
    if not (np.isfinite(values).all() and np.abs(values).max(initial=0.0) <= _FLOAT32_MAX):
        raise RequestError(f"{spec.name}: every value must be a finite number within float32's range (about ±3.4e38).")


def _split_row(row: Any, specs: list[InputSpec]) -> dict[str, Any]:
    if len(specs) == 1 and not (isinstance(row, dict) and set(row) == {specs[0].name}):
        return {specs[0].name: row}
    if not isinstance(row, dict) or set(row) != {s.name for s in specs}:
        raise RequestError(f"each instance must name the inputs {sorted(s.name for s in specs)}.")
    return row


def decode_request(
    payload: Any, signatures: dict[str, list[InputSpec]], max_batch: int, check_booleans: bool = True
) -> tuple[str, dict[str, np.ndarray], str]:
    """Return (signature name, input arrays, "row" or "columnar"); raise RequestError on bad input.
    `check_booleans=False` skips the walk that refuses true/false among floats: only for a body known
    to hold neither word."""
    if not isinstance(payload, dict):
        raise RequestError('the request body must be a JSON object with "instances" or "inputs".')
    if ("instances" in payload) == ("inputs" in payload):
        raise RequestError('give exactly one of "instances" (row format) or "inputs" (columnar format).')
    name = payload.get("signature_name", SIGNATURE)
    if not isinstance(name, str):
        raise RequestError(f'"signature_name" must be a string, got {type(name).__name__}.')
    if name not in signatures:
        raise RequestError(f"unknown signature_name {name!r}; this model has {sorted(signatures)}.")
    specs = signatures[name]
    if "instances" in payload:
        rows = payload["instances"]
        if not isinstance(rows, list) or not rows:
            raise RequestError('"instances" must be a non-empty list, one entry per sample.')
        check_batch(len(rows), max_batch)
        columns = {s.name: [_split_row(r, specs)[s.name] for r in rows] for s in specs}
        fmt = "row"
    else:
        inputs, names = payload["inputs"], {s.name for s in specs}
        if isinstance(inputs, dict) and set(inputs) == names:
            columns = inputs
        else:
            columns = {specs[0].name: inputs} if len(specs) == 1 else {}
        if set(columns) != names or not all(isinstance(v, list) and v for v in columns.values()):
            raise RequestError(f'"inputs" must give a non-empty list of samples for each of {sorted(s.name for s in specs)}.')
        for values in columns.values():
            check_batch(len(values), max_batch)
        fmt = "columnar"
    # the batch is checked before any conversion: 10,000 instances are never turned into a tensor
    arrays = {s.name: _tensor(columns[s.name], s, check_booleans) for s in specs}
    if len({len(a) for a in arrays.values()}) > 1:
        raise RequestError("every input must hold the same number of samples.")
    return name, arrays, fmt


def check_batch(size: int, max_batch: int) -> None:
    if size > max_batch:
        raise RequestError(f"the request holds {size} samples; this server takes at most {max_batch} per request.")


def encode_response(outputs: dict[str, np.ndarray], fmt: str) -> dict[str, Any]:
    if len(outputs) == 1:
        (values,) = outputs.values()
        return {"predictions" if fmt == "row" else "outputs": values.tolist()}
    if fmt == "row":
        batch = len(next(iter(outputs.values())))
        return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(batch)]}
    return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
