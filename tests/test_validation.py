import numpy as np
import onnx
from onnx import numpy_helper

from crossdeploy.parity import Thresholds
from crossdeploy.parity_report import misses_table
from crossdeploy.runtimes.base import ThreadSettings
from crossdeploy.validation import validate_variants
from crossdeploy.variants import Variant

THRESHOLDS = {
    "fp32": Thresholds(top1_agreement=1.0, top5_overlap=0.99, cosine_min=0.99999, max_abs_err_rel=1e-3),
    "int8": Thresholds(top1_agreement=0.98, top5_overlap=0.8, cosine_min=0.98),
}


def damage(source, target):
    """Scramble the classifier head: a conversion bug that still runs and still has the right shape."""
    model = onnx.load(str(source))
    head = max(model.graph.initializer, key=lambda t: (len(t.dims) == 2, numpy_helper.to_array(t).size))
    weights = numpy_helper.to_array(head)
    scrambled = np.random.default_rng(0).permutation(weights.reshape(-1)).reshape(weights.shape)
    head.CopyFrom(numpy_helper.from_array(scrambled.astype(weights.dtype), head.name))
    onnx.save(model, str(target))


def test_damaged_variant_fails_and_missing_one_is_skipped(tiny_source, tiny_optimized, tiny_images, tmp_path):
    damaged = tmp_path / "damaged.onnx"
    damage(tiny_optimized[0], damaged)
    variants = [
        Variant("torch-fp32", "fp32", "fp32", "torch", tiny_source[0]),
        Variant("onnxruntime-fp32", "fp32", "fp32", "onnxruntime", tiny_optimized[0]),
        Variant("onnxruntime-damaged", "fp32", "fp32", "onnxruntime", damaged),
        Variant("onnxruntime-int8", "int8", "int8", "onnxruntime", tmp_path / "never-built.onnx"),
    ]
    results = validate_variants(variants, tiny_images[1], THRESHOLDS, batch_size=4, threads=ThreadSettings(intra_op=1))
    assert results["torch-fp32"]["status"] == "ok" and "reference" in results["torch-fp32"]["reason"]
    assert results["onnxruntime-fp32"]["status"] == "ok"
    assert results["onnxruntime-fp32"]["max_abs_err_rel"] < 1e-4
    assert results["onnxruntime-damaged"]["status"] == "failed"
    assert "cosine_min" in results["onnxruntime-damaged"]["reason"]
    assert results["onnxruntime-int8"] == {
        "status": "skipped", "reason": f"{tmp_path / 'never-built.onnx'} was not built", "precision": "int8"
    }
    assert "onnxruntime-damaged" in misses_table(results)
    for row in results.values():
        if row["status"] != "skipped":
            assert {"top1_agreement", "top5_overlap", "max_abs_err", "mean_abs_err", "cosine_min", "size_mb"} <= set(row)


def test_nan_logits_fail_even_where_no_verdict_is_given_and_the_json_stays_valid(tiny_source, tiny_optimized, tiny_images, tmp_path):
    """A head bias of NaN: the model still runs and has the right shape, and every figure would be NaN."""
    import json

    from crossdeploy.stage import write_json

    model = onnx.load(str(tiny_optimized[0]))
    bias = min((t for t in model.graph.initializer if len(t.dims) == 1), key=lambda t: abs(t.dims[0] - 10))
    values = numpy_helper.to_array(bias).copy()
    values[3] = np.nan
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    broken = tmp_path / "nan.onnx"
    onnx.save(model, str(broken))
    variants = [
        Variant("torch-fp32", "fp32", "fp32", "torch", tiny_source[0]),
        Variant("onnxruntime-int8", "int8", "int8", "onnxruntime", broken),
        Variant("onnxruntime-int8-ok", "int8", "int8", "onnxruntime", tiny_optimized[0]),
    ]
    results = validate_variants(
        variants, tiny_images[1], THRESHOLDS, batch_size=4, threads=ThreadSettings(intra_op=1), unjudged={"int8": "no verdict here"}
    )
    assert results["onnxruntime-int8"]["status"] == "failed" and "NaN or inf" in results["onnxruntime-int8"]["reason"]
    assert results["onnxruntime-int8-ok"] == {**results["onnxruntime-int8-ok"], "status": "unjudged", "reason": "no verdict here"}
    write_json(tmp_path / "parity.json", results)
    assert json.loads((tmp_path / "parity.json").read_text())["onnxruntime-int8"]["nonfinite_values"] == len(tiny_images[1].pixels)
