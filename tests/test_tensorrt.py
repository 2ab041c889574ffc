"""TensorRT: what an engine is keyed by and when it must not be loaded, and the flags each major (10, 11)
builds with against what that major has (everywhere); building and running FP16 and INT8 engines, ONNX
Runtime's GPU providers and PyTorch CUDA (marked gpu)."""

import importlib.util
import json
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from crossdeploy.atomic import atomic_path
from crossdeploy.compose import compose
from crossdeploy.errors import CrossdeployError, RuntimeUnavailable
from crossdeploy.layout import engine_record, tensorrt_engines
from crossdeploy.tensorrt.api import APIS, ENUMS, IGNORED, BuildFlags, TensorRTApi, build_flags, tensorrt_api
from crossdeploy.tensorrt.engine_key import BatchProfile, BuildSettings, EngineRecord, GpuTarget, current_target, engine_key
from crossdeploy.tensorrt.engines import build_record, engine_settings, usable_engine
from crossdeploy.validation.parity import compare_logits
from crossdeploy.variants import Variant

A100 = GpuTarget("NVIDIA A100-SXM4-40GB", "8.0", "10.13.0")
H100 = GpuTarget("NVIDIA H100 80GB HBM3", "9.0", "10.13.0")
FP16 = BuildSettings("fp16", BatchProfile(1, 32, 128), workspace_mib=4096)


def test_profile_shapes_and_bad_settings_name_the_param():
    assert BatchProfile(1, 8, 64).shapes((3, 224, 224)) == ((1, 3, 224, 224), (8, 3, 224, 224), (64, 3, 224, 224))
    with pytest.raises(CrossdeployError, match="tensorrt.batch must satisfy 1 <= min <= opt <= max"):
        BatchProfile(8, 4, 64)
    with pytest.raises(CrossdeployError, match="precision 'int4'"):
        BuildSettings("int4", BatchProfile(1, 1, 1), 1024)
    with pytest.raises(CrossdeployError, match="tensorrt.optimization_level"):
        BuildSettings("fp16", BatchProfile(1, 1, 1), 1024, optimization_level=9)
    with pytest.raises(CrossdeployError, match="fp16_model applies to FP16 engines only; leave it False for precision int8"):
        BuildSettings("int8", BatchProfile(1, 1, 1), 1024, fp16_model=True)


def test_engine_key_changes_with_everything_an_engine_depends_on():
    base = engine_key("abc", FP16, A100)
    assert engine_key("abc", FP16, A100) == base
    changed = [
        engine_key("abd", FP16, A100),  # another ONNX model
        engine_key("abc", replace(FP16, precision="int8"), A100),
        engine_key("abc", replace(FP16, batch=BatchProfile(1, 64, 128)), A100),
        engine_key("abc", replace(FP16, workspace_mib=2048), A100),
        engine_key("abc", FP16, H100),  # another GPU type
        engine_key("abc", FP16, replace(A100, tensorrt="10.14.1")),
        engine_key("abc", replace(FP16, fp16_model=True), A100),  # built strongly typed from an FP16 model
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_record_round_trip_and_every_mismatch_says_why():
    record = EngineRecord(engine_key("abc", FP16, A100), "abc", FP16, A100)
    assert EngineRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert record.mismatch("abc", FP16, A100) is None
    assert "built for NVIDIA A100-SXM4-40GB (sm 8.0); this machine has NVIDIA H100 80GB HBM3 (sm 9.0)" in record.mismatch("abc", FP16, H100)
    assert "TensorRT 10.13.0; this machine has 10.14.1" in record.mismatch("abc", FP16, replace(A100, tensorrt="10.14.1"))
    assert "ONNX model has changed" in record.mismatch("xyz", FP16, A100)
    assert "the params now ask for" in record.mismatch("abc", replace(FP16, workspace_mib=1024), A100)


needs_no_gpu = pytest.mark.skipif(current_target()[0] is not None, reason="this machine can build TensorRT engines")


@needs_no_gpu
def test_without_a_gpu_the_record_says_skipped_and_the_runner_repeats_why(tiny_optimized, tmp_path):
    plan = tmp_path / "tensorrt-fp16.plan"
    record = build_record(plan, tiny_optimized[0], FP16, tmp_path / "timing")
    assert record["status"] == "skipped" and record["reason"] and not plan.exists()
    engine_record(plan).write_text(json.dumps(record))
    variant = Variant("tensorrt-fp16", "fp16", "fp16", "tensorrt", plan, record=engine_record(plan))
    assert variant.missing_reason() is None  # the runner decides, and says why
    with pytest.raises(RuntimeUnavailable, match=re.escape(record["reason"])):
        variant.runner(None).activate()


def test_an_engine_never_built_says_which_stage_builds_it(tmp_path):
    with pytest.raises(RuntimeUnavailable, match="run `dvc repro tensorrt`"):
        usable_engine(tmp_path / "tensorrt-int8.plan")
    assert Variant("tensorrt-int8", "int8", "int8", "tensorrt", tmp_path / "x.plan").missing_reason().endswith("was not built")


# ---- TensorRT 10 and 11: the flags each major's build names, against what each major has ----

#: BuilderFlag members TensorRT 11 removed, as NVIDIA's "Removed Python APIs and Replacements" (10.x to 11.x)
#: lists them. Its first 11.x editions also named DIRECT_IO, which 11.4.1's calls deprecated, not removed,
#: and which 11.0 and 11.1's bindings still have.
REMOVED_IN_11 = {"FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}
#: attributes TensorRT 11 removed (the same reference), all present in every 10.x
REMOVED_ATTRIBUTES_IN_11 = {
    "IBuilderConfig": {
        "int8_calibrator",
        "set_calibration_profile",
        "get_calibration_profile",
        "quantization_flags",
        "set_quantization_flag",
        "get_quantization_flag",
        "clear_quantization_flag",
        "algorithm_selector",
    },
    "ICudaEngine": {"device_memory_size", "get_device_memory_size_for_profile", "create_execution_context_without_device_memory"},
    "Builder": {"platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32"},
}
#: their replacements, which came in 10.1: 10.0, the pin's floor, lacks them
SINCE_10_1 = {"ICudaEngine": {"device_memory_size_v2", "get_device_memory_size_for_profile_v2"}}
COMBINATIONS = [("fp16", True), ("fp16", False), ("int8", False)]


def unusable_names(api: TensorRTApi, flags: BuildFlags) -> list[str]:
    """The names in `flags` that `api`'s major lacks or ignores."""
    named = [("NetworkDefinitionCreationFlag", n) for n in flags.network] + [("BuilderFlag", n) for n in flags.builder]
    ignored = IGNORED.get(api.major, {})
    return [f"{enum}.{n}" for enum, n in named if n not in ENUMS[api.major][enum] or n in ignored.get(enum, ())]


def test_the_recorded_enums_agree_with_nvidias_list_of_what_11_removed():
    assert not REMOVED_IN_11 & ENUMS[11]["BuilderFlag"]
    # INT4 and FP4 came after 10.0; WEIGHTLESS, deprecated since 10.0, left the bindings unlisted
    assert ENUMS[10]["BuilderFlag"] - ENUMS[11]["BuilderFlag"] == REMOVED_IN_11 - {"INT4", "FP4"} | {"WEIGHTLESS"}
    assert ENUMS[10]["NetworkDefinitionCreationFlag"] - ENUMS[11]["NetworkDefinitionCreationFlag"] == {"EXPLICIT_BATCH"}


@pytest.mark.parametrize("major", sorted(APIS))
@pytest.mark.parametrize("precision,fp16_model", COMBINATIONS)
def test_every_build_names_only_flags_its_major_has(major, precision, fp16_model):
    try:
        flags = build_flags(APIS[major], precision, fp16_model)
    except CrossdeployError:
        assert (major, precision, fp16_model) == (11, "fp16", False)
        return
    assert unusable_names(APIS[major], flags) == []


def test_each_major_builds_each_precision_as_decided():
    ten, eleven = APIS[10], APIS[11]
    # strongly typed wherever the model's types carry the precision: the same engine on both majors
    assert build_flags(ten, "int8", False) == BuildFlags(network=("STRONGLY_TYPED",), builder=())
    assert build_flags(ten, "fp16", True) == BuildFlags(network=("STRONGLY_TYPED",), builder=())
    assert build_flags(eleven, "int8", False) == build_flags(eleven, "fp16", True) == BuildFlags(network=(), builder=())
    # the FP32 model: 10 lowers it with its FP16 flag; 11 has none and says what to change
    assert build_flags(ten, "fp16", False) == BuildFlags(network=(), builder=("FP16",))
    with pytest.raises(
        CrossdeployError, match=r"TensorRT 11 builds an FP16 engine only from an FP16 ONNX model .*BuildSettings.fp16_model"
    ):
        build_flags(eleven, "fp16", False)


def test_a_table_naming_a_flag_its_major_lacks_or_ignores_is_refused():
    with pytest.raises(CrossdeployError, match=r"TensorRT 11 has no BuilderFlag.FP16; take it out"):
        replace(APIS[11], fp16_from_fp32=("FP16",))
    with pytest.raises(CrossdeployError, match=r"TensorRT 11 has no BuilderFlag.INT8"):
        TensorRTApi(11, strongly_typed=(), fp16_from_fp32=("INT8",))
    with pytest.raises(CrossdeployError, match=r"TensorRT 11 ignores NetworkDefinitionCreationFlag.STRONGLY_TYPED \(deprecated\)"):
        TensorRTApi(11, strongly_typed=("STRONGLY_TYPED",), fp16_from_fp32=None)
    with pytest.raises(CrossdeployError, match=r"TensorRT 10 has no NetworkDefinitionCreationFlag.PREFER_JIT_PYTHON_PLUGINS"):
        TensorRTApi(10, strongly_typed=("PREFER_JIT_PYTHON_PLUGINS",), fp16_from_fp32=("FP16",))
    # and the check above catches a build choice that reaches past the table (planted: 10's choice on 11)
    assert unusable_names(APIS[11], build_flags(APIS[10], "fp16", False)) == ["BuilderFlag.FP16"]
    assert unusable_names(APIS[11], build_flags(APIS[10], "int8", False)) == ["NetworkDefinitionCreationFlag.STRONGLY_TYPED"]


def test_the_table_follows_the_installed_major():
    assert tensorrt_api("10.0.1") is APIS[10] and tensorrt_api("10.16.1.11") is APIS[10]
    assert tensorrt_api("11.4.0.106") is APIS[11]
    for version in ("9.3.0.1", "12.0.0"):
        with pytest.raises(
            CrossdeployError,
            match=rf"TensorRT {re.escape(version)} is not a major this project builds with \(10 or 11\); install tensorrt>=10.0,<12",
        ):
            tensorrt_api(version)


ROOT = Path(__file__).resolve().parent.parent


def names_missing_somewhere(source: str) -> list[str]:
    """Flags and attributes `source` names directly that some supported TensorRT lacks."""
    found = [
        f"BuilderFlag.{n}"
        for n in re.findall(r"BuilderFlag\.(\w+)", source)
        if n not in ENUMS[10]["BuilderFlag"] & ENUMS[11]["BuilderFlag"]
    ]
    attributes = set().union(*REMOVED_ATTRIBUTES_IN_11.values(), *SINCE_10_1.values())
    return found + [f".{n}" for n in re.findall(r"\.(\w+)\b", source) if n in attributes]


def test_no_code_names_a_tensorrt_api_some_supported_release_lacks():
    # api.py names flags by the table's strings, which the tests above check
    sources = [p for d in ("crossdeploy", "stages") for p in (ROOT / d).rglob("*.py") if p.name != "api.py"]
    assert len(sources) > 20
    assert {
        str(p.relative_to(ROOT)): names_missing_somewhere(p.read_text()) for p in sources if names_missing_somewhere(p.read_text())
    } == {}
    # planted: the builder as it was before TensorRT 11, and a device-memory read on 10.0
    assert names_missing_somewhere("config.set_flag(trt.BuilderFlag.FP16)\nconfig.set_flag(trt.BuilderFlag.INT8)") == [
        "BuilderFlag.FP16",
        "BuilderFlag.INT8",
    ]
    assert names_missing_somewhere("size = engine.device_memory_size_v2") == [".device_memory_size_v2"]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None, reason="the tensorrt package is not installed here (pip install -e '.[gpu]')"
)
def test_the_recorded_api_is_the_installed_tensorrts():
    import tensorrt as trt

    api = tensorrt_api(trt.__version__)
    for enum, names in ENUMS[api.major].items():
        assert names <= set(getattr(trt, enum).__members__), f"{enum} lacks {sorted(names - set(getattr(trt, enum).__members__))}"
    for owner, names in REMOVED_ATTRIBUTES_IN_11.items():
        assert {n for n in names if hasattr(getattr(trt, owner), n)} == (names if api.major == 10 else set())
    if api.major == 11:
        assert all(hasattr(getattr(trt, owner), n) for owner, names in SINCE_10_1.items() for n in names)


PARAMS = compose([], config_dir=ROOT / "conf")


@pytest.mark.parametrize("major", sorted(APIS))
def test_the_pipeline_builds_the_fp16_engine_from_the_fp16_model_on_both_majors(major):
    """The tensorrt stage's engines, as layout and the tensorrt params make them: FP16 from paths.onnx_fp16, built
    strongly typed (the only FP16 engine TensorRT 11 builds), INT8 from the TensorRT-flavour QDQ model."""
    paths = PARAMS["paths"]
    engines = {engine.variant: (engine, engine_settings(engine, PARAMS["tensorrt"])) for engine in tensorrt_engines(paths)}
    (fp16, fp16_settings), (int8, int8_settings) = engines["tensorrt-fp16"], engines["tensorrt-int8"]
    assert fp16.onnx == Path(paths["onnx_fp16"]) and fp16_settings.precision == "fp16" and fp16_settings.fp16_model
    assert int8.onnx == Path(paths["onnx_int8_trt"]) and int8_settings.precision == "int8" and not int8_settings.fp16_model
    for settings in (fp16_settings, int8_settings):
        assert build_flags(APIS[major], settings.precision, settings.fp16_model).builder == ()  # strongly typed, no refusal


@pytest.fixture
def gpu_here(tmp_path, monkeypatch):
    """This machine as an A100 with TensorRT 11; each test plants the build (the gpu tests build for real)."""
    from crossdeploy.tensorrt import engines

    monkeypatch.setattr(engines, "current_target", lambda: (replace(A100, tensorrt="11.4.0.106"), ""))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_an_engine_that_cannot_be_built_is_recorded_and_the_other_is_built(gpu_here, tiny_optimized, tmp_path, monkeypatch):
    """Planted: TensorRT refuses the FP16 model. Its record says failed and why, the INT8 engine is built all
    the same, and a runner on this machine gets the reason at once rather than the same build again."""
    from crossdeploy.tensorrt import build
    from crossdeploy.tensorrt.engines import build_engines

    paths = {
        "onnx_fp16": tmp_path / "model.fp16.onnx",
        "onnx_int8_trt": tmp_path / "model.int8-trt.onnx",
        "tensorrt_timing": tmp_path / "timing",
    }
    for source in ("onnx_fp16", "onnx_int8_trt"):
        shutil.copy(tiny_optimized[0], paths[source])  # bytes to hash: the build itself is planted
    built = []

    def build_engine(onnx, settings, timing_cache, out):
        built.append(settings.precision)
        if settings.precision == "fp16":
            raise CrossdeployError(f"TensorRT cannot parse {onnx}: an op it has no FP16 kernel for")
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"an INT8 plan")

    monkeypatch.setattr(build, "build_engine", build_engine)
    records = build_engines(paths, {**PARAMS["tensorrt"], "enabled": True}, tmp_path / "tensorrt")
    assert built == ["fp16", "int8"] and {v: r["status"] for v, r in records.items()} == {"tensorrt-fp16": "failed", "tensorrt-int8": "ok"}
    assert records["tensorrt-fp16"]["reason"] == f"TensorRT cannot parse {paths['onnx_fp16']}: an op it has no FP16 kernel for"
    assert json.loads((tmp_path / "tensorrt" / "tensorrt-fp16.json").read_text()) == records["tensorrt-fp16"]
    assert (tmp_path / "tensorrt" / "tensorrt-int8.plan").read_bytes() == b"an INT8 plan"
    with pytest.raises(
        CrossdeployError,
        match="the tensorrt stage could not build tensorrt-fp16.plan on this GPU with this TensorRT: TensorRT cannot parse",
    ):
        usable_engine(tmp_path / "tensorrt" / "tensorrt-fp16.plan")
    assert built == ["fp16", "int8"]


def test_an_engine_that_failed_elsewhere_is_tried_here(gpu_here, tiny_optimized, tmp_path, monkeypatch, caplog):
    from crossdeploy.tensorrt import build, engines

    plan = tmp_path / "tensorrt-fp16.plan"
    settings = BuildSettings("fp16", BatchProfile(1, 2, 4), workspace_mib=512, fp16_model=True)
    failed = {
        "status": "failed",
        "reason": "out of memory",
        "onnx": str(tiny_optimized[0]),
        "onnx_sha256": engines.file_sha256(tiny_optimized[0]),
        "settings": settings.to_dict(),
        "target": asdict(replace(A100, gpu="a smaller GPU", compute_capability="7.5")),
    }
    engine_record(plan).write_text(json.dumps(failed))

    def build_engine(onnx, settings, timing_cache, out):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"this machine's plan")

    monkeypatch.setattr(build, "build_engine", build_engine)
    assert usable_engine(plan).read_bytes() == b"this machine's plan"
    assert "the pipeline could not build it on a smaller GPU with TensorRT 10.13.0 (out of memory)" in caplog.text


def test_an_engine_built_with_tensorrt_10_is_rebuilt_not_loaded_under_11(tiny_optimized, tmp_path, monkeypatch, caplog):
    from crossdeploy.tensorrt import build, engines

    plan = tmp_path / "tensorrt-int8.plan"
    plan.write_bytes(b"a plan TensorRT 10.13 serialized")
    settings = BuildSettings("int8", BatchProfile(1, 2, 4), workspace_mib=512)
    digest = engines.file_sha256(tiny_optimized[0])
    ten = EngineRecord(engine_key(digest, settings, A100), digest, settings, A100)
    engine_record(plan).write_text(
        json.dumps({"status": "ok", "onnx": str(tiny_optimized[0]), **ten.to_dict(), "plan_sha256": engines.file_sha256(plan)})
    )
    eleven = replace(A100, tensorrt="11.4.0.106")
    monkeypatch.setattr(engines, "current_target", lambda: (eleven, ""))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = []  # the GPU build itself is the gpu tests' to check; here: whether one is asked for

    def build_engine(onnx, settings, timing_cache, out):
        built.append((onnx, settings))
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"11's plan")

    monkeypatch.setattr(build, "build_engine", build_engine)
    local = usable_engine(plan)
    assert built == [(tiny_optimized[0], settings)] and local != plan and local.read_bytes() == b"11's plan"
    assert "built with TensorRT 10.13.0; this machine has 11.4.0.106" in caplog.text
    assert engine_key(digest, settings, eleven) in local.name and engine_key(digest, settings, A100) not in local.name


# ---- on a GPU: `python -m pytest -m gpu` ----

needs_tensorrt = pytest.mark.skipif(current_target()[0] is None, reason=f"needs TensorRT on an NVIDIA GPU: {current_target()[1]}")


def needs_provider(provider: str):
    import onnxruntime as ort

    return pytest.mark.skipif(
        provider not in ort.get_available_providers(),
        reason=f"needs onnxruntime-gpu: this onnxruntime has no {provider} (available: {', '.join(ort.get_available_providers())})",
    )


@pytest.fixture(scope="module")
def trt_int8_onnx(tiny_optimized, tiny_images, tmp_path_factory):
    from crossdeploy.onnx.quantize import QuantizeSettings, quantize_onnx

    path = tmp_path_factory.mktemp("qdq") / "tensorrt.onnx"
    quantize_onnx(
        tiny_optimized[0], path, tiny_images[0].tensors("NCHW"), QuantizeSettings(calibration_size=12, calibration_batch=4), "tensorrt"
    )
    return path


@pytest.fixture(scope="module")
def fp16_onnx(tiny_optimized, tmp_path_factory):
    from crossdeploy.onnx.fp16 import convert_fp16

    path = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    convert_fp16(tiny_optimized[0], path)
    return path


# the tiny model has random weights, which amplify FP16 and INT8 rounding (FP16 cosine about 0.998 on the
# CPU); tests/test_negative_controls judges INT8 at the real thresholds on a trained model
@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision,cosine", [("fp16", 0.995), ("int8", 0.9)])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_engine_builds_runs_and_matches_torch(
    precision, cosine, cuda_graph, fp16_onnx, trt_int8_onnx, tiny_images, tiny_reference, tmp_path
):
    from crossdeploy.runtimes.tensorrt_runtime import TensorRTRunner

    # as the pipeline builds them (engine_settings): FP16 strongly typed from the FP16 model, on TensorRT 10 and 11
    onnx = fp16_onnx if precision == "fp16" else trt_int8_onnx
    settings = BuildSettings(precision, BatchProfile(1, 4, 8), workspace_mib=1024, fp16_model=precision == "fp16")
    plan = tmp_path / f"tensorrt-{precision}.plan"
    record = build_record(plan, onnx, settings, tmp_path / "timing")
    assert record["status"] == "ok" and plan.stat().st_size > 0
    assert any((tmp_path / "timing").glob("timing-sm*.cache"))
    engine_record(plan).write_text(json.dumps(record))
    with TensorRTRunner(plan, f"tensorrt-{precision}", cuda_graph=cuda_graph) as runner:
        logits = runner.infer_all(tiny_images[1].tensors("NCHW"), 4)
        assert len(runner.device_ms) == len(logits) // 4 + (len(logits) % 4 > 0) and min(runner.device_ms) > 0
        with pytest.raises(ValueError, match="batches of 1 to 8"):
            runner.infer(np.zeros((9, *tiny_images[1].tensors("NCHW").shape[1:]), np.float32))
    assert compare_logits(tiny_reference, logits)["cosine_min"] >= cosine
    if precision == "int8":
        # the same QDQ model on ONNX Runtime's CPU: the same calibrated scales, so the engine must agree
        # far more closely than with the FP32 reference; a mis-scaled layer shows here first
        from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner

        with OnnxRuntimeRunner(onnx, "onnxruntime-int8-trt") as cpu:
            same_scales = cpu.infer_all(tiny_images[1].tensors("NCHW"), 4)
        assert compare_logits(same_scales, logits)["cosine_min"] >= 0.99


@pytest.mark.gpu
@needs_tensorrt
def test_cuda_graphs_follow_the_batch_size_and_match_the_plain_engine(trt_int8_onnx, tiny_images, tmp_path):
    from crossdeploy.runtimes.tensorrt_runtime import TensorRTRunner

    plan = tmp_path / "tensorrt-int8.plan"
    record = build_record(plan, trt_int8_onnx, BuildSettings("int8", BatchProfile(1, 4, 8), workspace_mib=1024), tmp_path / "timing")
    engine_record(plan).write_text(json.dumps(record))
    images = tiny_images[1].tensors("NCHW")
    sequence = [images[:4], images[:4], images[4:6], images[4:6], images[4:8], images[4:8], images[:2], images[:4]]
    with TensorRTRunner(plan, "plain") as plain, TensorRTRunner(plan, "graphed", cuda_graph=True) as graphed:
        for batch in sequence:
            np.testing.assert_allclose(graphed.infer(batch), plain.infer(batch), rtol=0, atol=1e-5)
        assert graphed._replay.captures == 3 and graphed._replay.replays == 0
        for _ in range(3):
            np.testing.assert_allclose(graphed.infer(images[:4]), plain.infer(images[:4]), rtol=0, atol=1e-5)
        assert graphed._replay.replays >= 1


@pytest.mark.gpu
@needs_tensorrt
def test_a_timing_cache_from_elsewhere_is_replaced_not_kept(trt_int8_onnx, tmp_path, caplog):
    settings = BuildSettings("int8", BatchProfile(1, 2, 4), workspace_mib=512)
    target, _ = current_target()
    from crossdeploy.tensorrt.engines import timing_cache_path

    cache = timing_cache_path(tmp_path / "timing", target)
    cache.parent.mkdir()
    cache.write_bytes(b"not a timing cache from this GPU" * 64)
    record = build_record(tmp_path / "tensorrt-int8.plan", trt_int8_onnx, settings, tmp_path / "timing")
    assert record["status"] == "ok"
    assert b"not a timing cache" not in cache.read_bytes() and cache.stat().st_size > 0
    assert "does not match this GPU or TensorRT" in caplog.text


@pytest.mark.gpu
@needs_tensorrt
def test_a_swapped_plan_is_not_loaded(trt_int8_onnx, tmp_path, monkeypatch):
    settings = BuildSettings("int8", BatchProfile(1, 2, 4), workspace_mib=512)
    plan = tmp_path / "tensorrt-int8.plan"
    engine_record(plan).write_text(json.dumps(build_record(plan, trt_int8_onnx, settings, tmp_path / "timing")))
    assert usable_engine(plan) == plan
    plan.write_bytes(plan.read_bytes()[:-16] + bytes(16))  # damaged in transit, or another engine
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    local = usable_engine(plan)
    assert local != plan and local.is_relative_to(tmp_path / "cache") and engine_record(local).is_file()


@pytest.mark.gpu
@needs_tensorrt
def test_a_mismatched_shared_engine_is_rebuilt_locally(trt_int8_onnx, tmp_path, monkeypatch):
    settings = BuildSettings("int8", BatchProfile(1, 2, 4), workspace_mib=512)
    plan = tmp_path / "tensorrt-int8.plan"
    record = build_record(plan, trt_int8_onnx, settings, tmp_path / "timing")
    record["target"] = {**record["target"], "compute_capability": "1.0", "gpu": "an older GPU"}
    engine_record(plan).write_text(json.dumps(record))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    local = usable_engine(plan)
    assert local != plan and local.is_file() and local.is_relative_to(tmp_path / "cache")


@pytest.mark.gpu
@pytest.mark.parametrize(
    "provider,precision,cosine",
    [
        pytest.param("CUDAExecutionProvider", "fp32", 0.99999, marks=needs_provider("CUDAExecutionProvider")),
        pytest.param("CUDAExecutionProvider", "fp16", 0.995, marks=needs_provider("CUDAExecutionProvider")),
        pytest.param("TensorrtExecutionProvider", "int8", 0.9, marks=needs_provider("TensorrtExecutionProvider")),
    ],
)
def test_onnxruntime_gpu_providers_match_torch(
    provider, precision, cosine, tiny_optimized, fp16_onnx, trt_int8_onnx, tiny_images, tiny_reference
):
    model = {"fp32": tiny_optimized[0], "fp16": fp16_onnx, "int8": trt_int8_onnx}[precision]
    with Variant(provider, precision, precision, "onnxruntime", model, {"provider": provider}).runner(None) as runner:
        logits = runner.infer_all(tiny_images[1].tensors("NCHW"), 4)
    assert compare_logits(tiny_reference, logits)["cosine_min"] >= cosine


@pytest.mark.gpu
def test_torch_cuda_fp16_matches_fp32(tiny_source, tiny_images, tiny_reference):
    with Variant("torch-cuda-fp16", "fp16", "fp16", "torch", tiny_source[0], {"device": "cuda", "half": True}).runner(None) as runner:
        logits = runner.infer_all(tiny_images[1].tensors("NCHW"), 4)
    assert compare_logits(tiny_reference, logits)["cosine_min"] >= 0.995
