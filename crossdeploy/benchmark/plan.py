"""What the benchmark stage will measure, from params.yaml's benchmark section: the grid, the windows, the
MLPerf settings and the harness check, as one frozen plan. Checked here, naming the param to fix, before
a single runner opens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crossdeploy.benchmark.closed_loop import WindowSettings
from crossdeploy.benchmark.mlperf import MlperfSettings
from crossdeploy.errors import CrossdeployError
from crossdeploy.runtimes.base import ThreadSettings
from crossdeploy.variants import PARITY_ONLY, TORCH_COMPILE, Variant


@dataclass(frozen=True)
class BenchmarkPlan:
    batch_sizes: list[int]
    concurrencies: list[int]
    threads: ThreadSettings
    windows: WindowSettings
    mlperf: MlperfSettings | None  # None: no LoadGen scenarios
    mlperf_variants: list[str] | None  # None: every variant
    harness_check: bool
    harness_batch: int = 32  # benchmark.harness_batch, its own param: the INT8 target's batch is the report's business
    harness_rounds: int = 3  # the profile's harness_rounds: paired rounds, their median is the figure
    harness_variant: str = "onnxruntime-int8"  # measured against a bare `session.run` loop: an ONNX Runtime variant
    disabled: dict[str, str] = field(default_factory=dict)  # variant -> why it is not measured
    concurrency_search: bool = True  # the profile's: stop adding clients where throughput stops rising (benchmark/search.py)

    @classmethod
    def from_params(cls, cfg: dict[str, Any], known_variants: list[str]) -> "BenchmarkPlan":
        """Build the plan from params.yaml's benchmark section, naming the param to fix on bad values."""
        profiles = cfg["profiles"]
        if cfg["profile"] not in profiles:
            raise CrossdeployError(f"benchmark.profile {cfg['profile']!r} is unknown; use one of {', '.join(profiles)}.")
        profile = profiles[cfg["profile"]]
        for key in ("batch_sizes", "concurrency"):
            values = cfg[key]
            if not values or not all(isinstance(v, int) and v >= 1 for v in values):
                raise CrossdeployError(f"benchmark.{key} must be a non-empty list of positive integers, got {values!r}.")
        mlperf_cfg = cfg["mlperf"]
        mlperf = None
        if mlperf_cfg["enabled"]:
            server_runs = profile.get("mlperf_server_runs", "missing")
            if server_runs is not None and (not isinstance(server_runs, int) or isinstance(server_runs, bool) or server_runs < 1):
                raise CrossdeployError(
                    f"benchmark.profiles.{cfg['profile']}.mlperf_server_runs must be a positive integer, or null for "
                    f"LoadGen's own peak search, got {server_runs!r}."
                )
            mlperf = MlperfSettings(
                min_duration_ms=int(profile["mlperf_min_duration_ms"]),
                min_query_count={k: int(v) for k, v in profile["mlperf_min_query_count"].items()},
                server_latency_ms=float(mlperf_cfg["server_latency_ms"]),
                offline_batch=int(mlperf_cfg["offline_batch"]),
                server_max_batch=int(mlperf_cfg["server_max_batch"]),
                workers=int(mlperf_cfg["workers"]),
                server_runs=server_runs,
            )
        named = _variant_list(cfg["variants"], known_variants, "benchmark.variants") or []
        disabled = {name: why for name, why in PARITY_ONLY.items() if name not in named}
        if not cfg["torch_compile"]:
            disabled[TORCH_COMPILE] = "benchmark.torch_compile is false"
        harness_batch = cfg["harness_batch"]
        if not isinstance(harness_batch, int) or harness_batch < 1:
            raise CrossdeployError(f"benchmark.harness_batch must be a positive integer, got {harness_batch!r}.")
        return cls(
            batch_sizes=list(cfg["batch_sizes"]),
            concurrencies=list(cfg["concurrency"]),
            threads=ThreadSettings(**cfg["threads"]),
            windows=WindowSettings(
                warmup_requests=int(profile["warmup_requests"]),
                window_s=float(profile["window_s"]),
                max_windows=int(profile["max_windows"]),
                stability_pct=float(profile["stability_pct"]),
                cell_cap_s=float(profile["cell_cap_s"]),
            ),
            mlperf=mlperf,
            mlperf_variants=_variant_list(mlperf_cfg["variants"], known_variants, "benchmark.mlperf.variants"),
            harness_check=bool(cfg["harness_check"]),
            harness_batch=harness_batch,
            harness_rounds=_positive(profile, cfg["profile"], "harness_rounds"),
            disabled=disabled,
            concurrency_search=_flag(profile, cfg["profile"], "concurrency_search"),
        )


def _variant_list(value: Any, known: list[str], param: str) -> list[str] | None:
    if value in (None, "all"):
        return None
    names = [value] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CrossdeployError(f"{param} names unknown variants {', '.join(unknown)}; choose from all, {', '.join(known)}.")
    return names


def select_variants(variants: list[Variant], value: Any) -> list[Variant]:
    """The variants `benchmark.variants` asks for, in pipeline order."""
    names = _variant_list(value, [v.name for v in variants], "benchmark.variants")
    return variants if names is None else [v for v in variants if v.name in names]


def _positive(profile: dict[str, Any], name: str, key: str) -> int:
    value = profile.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CrossdeployError(f"benchmark.profiles.{name}.{key} must be a positive integer, got {value!r}.")
    return value


def _flag(profile: dict[str, Any], name: str, key: str) -> bool:
    value = profile.get(key)
    if not isinstance(value, bool):
        raise CrossdeployError(f"benchmark.profiles.{name}.{key} must be true or false, got {value!r}.")
    return value
