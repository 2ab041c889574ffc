"""Each variant is measured in a process of its own: a runtime that dies there fails only its own rows,
and the memory a runtime keeps after it is closed goes back to the system when its variant is done."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from crossdeploy.benchmark.closed_loop import WindowSettings
from crossdeploy.benchmark.isolation import exit_text
from crossdeploy.benchmark.mlperf import MlperfSettings
from crossdeploy.benchmark.plan import BenchmarkPlan
from crossdeploy.benchmark.run import measure_variant, run_benchmark
from crossdeploy.runtimes.base import Runner, ThreadSettings
from crossdeploy.variants import Variant

HOARD_MB = 300
_hoard: list[np.ndarray] = []  # what a runtime keeps after it is closed (TensorFlow kept 1.8 GB)


class PlantedRunner(Runner):
    """A runtime with a planted defect: `kill_at` batch size kills its process (as the OOM killer or a
    segfault would); `hoard` keeps HOARD_MB for as long as the process lives."""

    def __init__(self, name: str, threads: ThreadSettings, kill_at: int | None, hoard: bool):
        super().__init__(name, threads)
        self.kill_at, self.hoard = kill_at, hoard

    def _activate_impl(self) -> None:
        if self.hoard:
            _hoard.append(np.ones(HOARD_MB * 2**20, np.uint8))

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.zeros((len(batch), 2), np.float32)


@dataclass(frozen=True)
class PlantedVariant(Variant):
    kill_at: int | None = None
    hoard: bool = False

    def runner(self, threads: ThreadSettings) -> Runner:
        return PlantedRunner(self.name, threads, self.kill_at, self.hoard)


@dataclass
class Images:
    def tensors(self, layout: str) -> np.ndarray:
        return np.zeros((8, 3, 4, 4), np.float32)


def _variant(name: str, **defect) -> PlantedVariant:
    return PlantedVariant(name, "fp32", "fp32", "torch", Path(__file__), **defect)


PLAN = BenchmarkPlan(
    batch_sizes=[1, 4],
    concurrencies=[1],
    threads=ThreadSettings(),
    windows=WindowSettings(warmup_requests=1, window_s=0.02, max_windows=3, stability_pct=50, cell_cap_s=0.2),
    mlperf=MlperfSettings(min_duration_ms=100, min_query_count={"singlestream": 4, "offline": 4, "server": 4}),
    mlperf_variants=None,
    harness_check=False,
    harness_variant="",
)


def test_a_variant_whose_process_dies_fails_its_own_rows_and_the_next_is_measured(tmp_path):
    results = run_benchmark([_variant("killed", kill_at=4), _variant("healthy")], Images(), PLAN, tmp_path)
    killed = results["killed"]
    assert killed["b1_c1"]["status"] == "ok"  # measured before the crash: kept
    assert killed["b4_c1"]["status"] == "failed" and "SIGKILL" in killed["b4_c1"]["reason"]
    assert "the process measuring killed" in killed["b4_c1"]["reason"]
    assert results["mlperf"]["killed"]["status"] == "failed"
    assert {row["status"] for row in results["healthy"].values()} == {"ok"}
    assert results["mlperf"]["healthy"]["status"] == "ok"


def test_the_memory_a_runtime_keeps_goes_back_with_its_process(tmp_path):
    """The planted defect: measured in this process (as the benchmark did), the hoard stays."""
    me = psutil.Process()
    before = me.memory_info().rss
    results = run_benchmark([_variant("hoarder", hoard=True)], Images(), PLAN, tmp_path / "isolated")
    assert me.memory_info().rss - before < HOARD_MB * 2**20 / 3
    # what it held is recorded where it was held: the variant's own peak
    assert results["resources"]["hoarder"]["own_peak_rss_mb"] > HOARD_MB
    try:
        measure_variant(_variant("hoarder", hoard=True), Images(), PLAN, tmp_path / "here", lambda event: None)
        assert me.memory_info().rss - before > HOARD_MB * 2**20 * 0.9
    finally:
        _hoard.clear()


def test_how_a_process_ended_reads_as_a_reason():
    assert exit_text(1) == "exit code 1"
    assert "out-of-memory killer" in exit_text(-signal.SIGKILL) and "native crash" in exit_text(-signal.SIGSEGV)


class DiesWhenUnpickled:
    """An argument whose unpickling kills the child, as a child killed while it starts up would die."""

    def __reduce__(self):
        return os._exit, (3,)


def _never_called(*args) -> None:
    raise AssertionError("the child died before it could run this")


def test_a_child_that_dies_while_reading_its_arguments_fails_instead_of_hanging():
    """The defect: tens of MB of arguments in multiprocessing's spawn payload, whose pipe the parent keeps
    readable itself while it writes, so the parent blocked for ever on a child that had died."""
    import threading

    from crossdeploy.benchmark.isolation import ProcessEnded, run_isolated

    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_isolated(_never_called, (DiesWhenUnpickled(), np.zeros(40 * 2**20, np.uint8)), lambda event: None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "run_isolated hung on a child that died while reading its arguments"
    assert isinstance(outcome[0], ProcessEnded) and "exit code 3" in str(outcome[0])


def test_a_row_this_machine_certainly_cannot_run_gets_no_process(tmp_path, monkeypatch):
    """The planted defect: a GPU row on a machine with no GPU, whose process (started, then finding no GPU)
    cost a start-up and sat in the time estimate as a whole variant's work until it ended."""
    from crossdeploy import device_info

    monkeypatch.setattr(device_info, "gpus", lambda: [])
    monkeypatch.setattr(device_info, "GPU_DEVICE_NODES", ())
    gpu_row = PlantedVariant("gpu-row", "fp16", "fp16", "torch", Path(__file__), {"device": "cuda", "half": True})
    results = run_benchmark([gpu_row, _variant("healthy")], Images(), PLAN, tmp_path / "no-gpu")
    assert "gpu-row" not in results["resources"]  # what a measuring process records: none ran
    assert {row["reason"] for row in results["gpu-row"].values()} == {"no NVIDIA GPU here (nvidia-smi finds none)"}
    assert {row["status"] for row in results["gpu-row"].values()} == {"skipped"}
    assert results["mlperf"]["gpu-row"]["status"] == "skipped"
    assert {row["status"] for row in results["healthy"].values()} == {"ok"}
    # where nvidia-smi lists a GPU only the runtime can tell, in the row's own process
    monkeypatch.setattr(device_info, "gpus", lambda: [{"name": "planted", "driver": "580.0", "compute_capability": "8.0"}])
    results = run_benchmark([gpu_row], Images(), PLAN, tmp_path / "gpu")
    assert "gpu-row" in results["resources"] and results["gpu-row"]["b1_c1"]["status"] == "ok"
