import numpy as np
import onnx
from onnx import numpy_helper

from crossdeploy.runtimes.base import ThreadSettings
from crossdeploy.validation.parity import Thresholds
from crossdeploy.validation.report import misses_table
from crossdeploy.validation.run import validate_variants
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
        "status": "skipped",
        "reason": f"{tmp_path / 'never-built.onnx'} was not built",
        "precision": "int8",
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


def _served_variant(name, served_repo):
    from crossdeploy.layout import SERVED

    options = {
        **SERVED[name.removesuffix("-again")]._asdict(),
        "repository": served_repo / "models" / "serving",
        "model": "tiny",
        "params_file": served_repo / "params.yaml",
    }
    return Variant(name, "fp32", "served", "served", served_repo / "models" / "serving" / "tiny" / "1", options)


def _record_servers(monkeypatch, events, running, up=None):
    from crossdeploy.serving.server_process import ServerProcess

    start, stop = ServerProcess.start, ServerProcess.stop

    def started(self):
        events.append("start")
        running.append(self)
        endpoint = start(self)
        if up is not None:
            up.set()
        return endpoint

    def stopped(self, *args, **kwargs):
        if self.process is not None:
            events.append("stop")
            running.remove(self)
        return stop(self, *args, **kwargs)

    monkeypatch.setattr(ServerProcess, "start", started)
    monkeypatch.setattr(ServerProcess, "stop", stopped)


def test_a_models_served_rows_share_one_server_that_runs_beside_the_in_process_rows(
    tiny_source, tiny_optimized, tiny_images, served_repo, monkeypatch
):
    """The served rows run in a lane of their own, beside the in-process rows: here each side waits for the
    other to have started (an in-process row for the server, a served request for an in-process row), which
    rows run one after another, in either order, never get (planted: the waiting row fails after 120 s). The
    model's three served rows share the one server, in-process rows between them in the table or not, and
    it is stopped by the time validate returns."""
    import threading

    from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner
    from crossdeploy.runtimes.served_runtime import ServedRunner

    events, running, up, in_process = [], [], threading.Event(), threading.Event()
    _record_servers(monkeypatch, events, running, up)
    activate, infer = OnnxRuntimeRunner._activate_impl, ServedRunner._infer_impl

    def onnxruntime(self):
        in_process.set()
        if not up.wait(timeout=120):
            raise AssertionError("the in-process row ran while no served row had started its server")
        return activate(self)

    def served(self, batch):
        if not in_process.wait(timeout=120):
            raise AssertionError("the served row ran while no in-process row had started")
        return infer(self, batch)

    monkeypatch.setattr(OnnxRuntimeRunner, "_activate_impl", onnxruntime)
    monkeypatch.setattr(ServedRunner, "_infer_impl", served)
    variants = [
        Variant("torch-fp32", "fp32", "fp32", "torch", tiny_source[0]),
        Variant("onnxruntime-fp32", "fp32", "fp32", "onnxruntime", tiny_optimized[0]),
        _served_variant("kserve-rest-fp32", served_repo),
        _served_variant("kserve-rest-bytes", served_repo),
        Variant("onnxruntime-fp32-again", "fp32", "fp32", "onnxruntime", tiny_optimized[0]),
        _served_variant("kserve-rest-fp32-again", served_repo),
    ]
    thresholds = {**THRESHOLDS, "served": Thresholds(top1_agreement=0.0, cosine_min=0.99)}
    results = validate_variants(variants, tiny_images[1], thresholds, batch_size=4, threads=ThreadSettings(intra_op=1))
    assert list(results) == [v.name for v in variants]  # the table keeps the variants' order, whichever lane ran them
    assert {name: row["status"] for name, row in results.items()} == dict.fromkeys(results, "ok"), results
    assert results["kserve-rest-fp32"]["max_abs_err"] == results["kserve-rest-fp32-again"]["max_abs_err"]
    assert events == ["start", "stop"] and not running


def test_an_interrupt_while_validate_waits_for_the_served_lane_stops_it(tiny_source, tiny_images, served_repo, monkeypatch):
    """Ctrl-C once the in-process rows are done, while validate waits for the served lane: the lane ends after
    its current row, the next row never starts and no server is left (planted, the lane told to stop only
    when a row raised before that wait: the second row ran)."""
    import os
    import signal

    import pytest

    from crossdeploy.runtimes.served_runtime import ServedRunner

    events, running, rows, sent = [], [], [], []
    _record_servers(monkeypatch, events, running)
    activate, infer = ServedRunner._activate_impl, ServedRunner._infer_impl

    def served(self):
        rows.append(self.name)
        return activate(self)

    def interrupted(self, batch):
        if rows == ["kserve-rest-fp32"] and not sent:
            sent.append(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, once, to this process alone
        return infer(self, batch)

    monkeypatch.setattr(ServedRunner, "_activate_impl", served)
    monkeypatch.setattr(ServedRunner, "_infer_impl", interrupted)
    variants = [
        Variant("torch-fp32", "fp32", "fp32", "torch", tiny_source[0]),
        _served_variant("kserve-rest-fp32", served_repo),
        _served_variant("kserve-rest-bytes", served_repo),
    ]
    # Python's own Ctrl-C handler: a server run in process by an earlier test (uvicorn) may have left its own
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            validate_variants(variants, tiny_images[1], THRESHOLDS, batch_size=4, threads=ThreadSettings(intra_op=1))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert rows == ["kserve-rest-fp32"]
    assert events == ["start", "stop"] and not running


def test_a_failed_reference_stops_the_served_lane_and_its_server(tiny_images, served_repo, monkeypatch, tmp_path):
    """No reference, no table: the stage fails, and the served lane stops after its row and stops its server
    (planted: a lane that went on would start the second row's work after the failure)."""
    import pytest

    from crossdeploy.runtimes.served_runtime import ServedRunner

    events, running, rows = [], [], []
    _record_servers(monkeypatch, events, running)
    activate = ServedRunner._activate_impl

    def served(self):
        rows.append(self.name)
        return activate(self)

    monkeypatch.setattr(ServedRunner, "_activate_impl", served)
    variants = [
        Variant("torch-fp32", "fp32", "fp32", "torch", tmp_path / "no-program.pt2"),
        _served_variant("kserve-rest-fp32", served_repo),
        _served_variant("kserve-rest-bytes", served_repo),
    ]
    with pytest.raises(Exception, match="no-program"):
        validate_variants(variants, tiny_images[1], THRESHOLDS, batch_size=4, threads=ThreadSettings(intra_op=1))
    # the reference fails at once and the first row's server takes seconds to start: the second row never begins
    assert rows in ([], ["kserve-rest-fp32"]), rows
    assert events in ([], ["start", "stop"]) and not running


def test_garbage_between_runners_collects_cycles_and_leaves_nothing_frozen(monkeypatch):
    import gc
    import weakref

    from crossdeploy.validation.run import GarbageBetweenRunners

    class Node:
        pass

    def cycle():
        node = Node()
        node.self = node
        return node

    assert gc.get_freeze_count() == 0
    with GarbageBetweenRunners() as garbage:
        left = weakref.ref(cycle())  # what a runner leaves behind in a reference cycle
        survivor = cycle()
        garbage.release()
        assert left() is None
        assert gc.get_freeze_count() > 0, "survivors are frozen: later collections do not walk them"
        kept = weakref.ref(survivor)
    del survivor  # a survivor that later becomes garbage in a cycle
    gc.collect()
    assert gc.get_freeze_count() == 0 and kept() is None, "unfrozen at the end: the cycle is collected"

    # the planted defect: a scope that does not unfreeze keeps such a cycle for the process's life
    monkeypatch.setattr(gc, "unfreeze", lambda: None)
    try:
        with GarbageBetweenRunners() as garbage:
            survivor = cycle()
            garbage.release()
            kept = weakref.ref(survivor)
        del survivor
        gc.collect()
        assert kept() is not None
    finally:  # the rest of the session must not run frozen
        monkeypatch.undo()
        gc.unfreeze()


def keeps_a_callers_freeze(scope_type) -> bool:
    """Whether `scope_type` neither freezes more than the caller froze nor unfreezes it.

    The frozen count is only ever checked from above: a frozen object can still die by reference
    counting (anything of the test runner's that was alive at the caller's freeze), so the count may
    fall by a few between two readings, but never rise unless the scope froze more.
    """
    import gc

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with scope_type() as garbage:
            made_since = [[] for _ in range(1000)]  # tracked objects made after the caller's freeze
            garbage.release()
            kept_during = 0 < gc.get_freeze_count() <= frozen
        kept_after = 0 < gc.get_freeze_count() <= frozen
        del made_since
        return kept_during and kept_after
    finally:
        gc.unfreeze()


def test_garbage_between_runners_keeps_a_callers_own_freeze():
    import gc

    from crossdeploy.validation.run import GarbageBetweenRunners

    assert keeps_a_callers_freeze(GarbageBetweenRunners)

    class FreezesRegardless(GarbageBetweenRunners):  # the planted defect: blind to the caller's freeze
        def __enter__(self):
            super().__enter__()
            self._freezes = True
            return self

    assert not keeps_a_callers_freeze(FreezesRegardless)
    assert gc.get_freeze_count() == 0


def test_random_weights_unjudged_keys_are_checked_and_every_precision_has_its_reason():
    import pytest

    from crossdeploy.compose import compose
    from crossdeploy.errors import CrossdeployError
    from crossdeploy.validation.run import judging_rules

    cfg = compose([])["validate"]
    thresholds = {key: Thresholds(**values) for key, values in cfg["thresholds"].items()}
    rules = judging_rules(cfg, thresholds)
    assert set(rules["unjudged"]) == {"int8", "bf16", "encoded"} and all(rules["unjudged"].values())
    planted = {**cfg, "random_weights": {**cfg["random_weights"], "unjudged": ["int8", "fp8"]}}
    with pytest.raises(CrossdeployError, match="validate.random_weights.unjudged names fp8; it takes int8, encoded, bf16"):
        judging_rules(planted, thresholds)
