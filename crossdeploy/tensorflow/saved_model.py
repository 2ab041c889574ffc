"""Saving a SavedModel so that the same model gives the same files.

TensorFlow writes a random uuid into every SavedModel's fingerprint.pb, so a stage that re-runs on the same
inputs wrote a new artifact each time: DVC saw it change and re-ran every stage that reads it, and no two
machines' caches held the same SavedModel. The uuid is replaced by one derived from the fingerprint's own
hashes of the program, signatures, object graph and checkpoint: the same model keeps its uuid, another
model gets another.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FINGERPRINT = "fingerprint.pb"


def save_saved_model(tf, obj, export_dir: Path, signatures) -> None:
    tf.saved_model.save(obj, str(export_dir), signatures=signatures)
    settle_fingerprint(Path(export_dir))


def settle_fingerprint(export_dir: Path) -> None:
    from tensorflow.core.protobuf import fingerprint_pb2

    path = export_dir / FINGERPRINT
    if not path.is_file():  # TensorFlow writes none where fingerprinting is off
        return
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
    content = "/".join(
        str(value)
        for value in (
            fingerprint.saved_model_checksum,
            fingerprint.graph_def_program_hash,
            fingerprint.signature_def_hash,
            fingerprint.saved_object_graph_hash,
            fingerprint.checkpoint_hash,
        )
    )
    # TensorFlow's own form: a 128-bit number in decimal
    fingerprint.uuid = str(int.from_bytes(hashlib.sha256(content.encode()).digest()[:16], "big"))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))
