"""The deploy decision, as pure functions over benchmark.json, parity.json and the deploy params.

Rules, in order:
1. A variant may be chosen only if deploy.variants allows it, its parity row is `ok` (the verdict under its
   precision's validate.thresholds), and it passes the optional stricter floors and size cap. An `unjudged`
   row (a random-weight model's INT8 and served-bytes rows, whose figures carry no verdict) is eligible only
   when its own file passed validate's floor (its outputs follow the input) and its `trained/<variant>` row,
   the same conversion judged on a stand-in of the same architecture, is `ok`; the floors then apply to the
   stand-in's figures, the ones that judged the conversion. The decision names the row that judged the file.
2. Of its cells, only those measured (`ok`) and stable count; an unstable cell that met the SLO is reported,
   never chosen, since its figures did not settle.
3. Of the cells with p99 <= deploy.p99_ms, the highest throughput wins; cells within the benchmark's own
   stability_pct of it are a tie (a closer gap is measurement noise), and a tie goes to the simpler
   deployment: in-process over served, then fewer clients, then the smaller batch.
4. When no cell meets the SLO, the decision says so (`met: false`) and names the closest stable cell and by
   how much it misses; deploy.strict turns that into a failed stage.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crossdeploy.benchmark.cells import parse_cell, variant_cells
from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import REFERENCE, SERVED, TRAINED_PREFIX

#: the parity figures a decision carries (those a row has)
FIDELITY = ("top1_agreement", "top5_overlap", "cosine_min", "cosine_p1", "max_abs_err_rel", "accuracy_drop", "accuracy_ratio")


class SloNotMet(CrossdeployError):
    """deploy.strict is set and no cell meets the SLO."""


@dataclass(frozen=True)
class Settings:
    """The deploy params (conf/config.yaml deploy:, p99_ms per target)."""

    p99_ms: float
    variants: str | list[str] = "all"  # all | served | a list of variant names
    min_top1_agreement: float | None = None  # stricter than the parity verdict, for every precision
    min_cosine: float | None = None
    max_model_mb: float | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        if not _finite(self.p99_ms) or self.p99_ms <= 0:
            raise CrossdeployError(f"deploy.p99_ms must be a positive, finite number of milliseconds, got {self.p99_ms!r}.")
        for name in ("min_top1_agreement", "min_cosine", "max_model_mb"):
            value = getattr(self, name)
            if value is not None and not _finite(value):
                raise CrossdeployError(f"deploy.{name} must be a finite number or null, got {value!r}.")
        if not isinstance(self.strict, bool):
            raise CrossdeployError(f"deploy.strict must be true or false, got {self.strict!r}.")
        named = isinstance(self.variants, (list, tuple)) and self.variants and all(isinstance(v, str) and v.strip() for v in self.variants)
        if self.variants not in ("all", "served") and not named:
            raise CrossdeployError(f"deploy.variants must be all, served or a non-empty list of variant names, got {self.variants!r}.")
        if named:
            object.__setattr__(self, "variants", [v.strip() for v in self.variants])

    @classmethod
    def from_params(cls, cfg: dict[str, Any] | None, **overrides: Any) -> "Settings":
        """The deploy params section, with the overrides that are set (crossdeploy deploy's flags)."""
        if cfg is not None and not isinstance(cfg, dict):
            raise CrossdeployError(f"the deploy params must be a mapping (p99_ms, variants, ...), got {cfg!r}.")
        values = {
            **{k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__},
            **{k: v for k, v in overrides.items() if v is not None},
        }
        if "p99_ms" not in values:
            raise CrossdeployError(
                "deploy.p99_ms is not set: set it in conf/target/ (then python -m crossdeploy.compose), or pass --p99-ms."
            )
        return cls(**values)

    def allows(self, variant: str) -> bool:
        if self.variants == "all":
            return True
        if self.variants == "served":
            return variant in SERVED
        return variant in self.variants


def load_metrics(path: str | Path) -> Any:
    """benchmark.json or parity.json; a file that is not JSON is one sentence naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CrossdeployError(f"{path} does not exist: run `dvc repro` (or `dvc pull`) first.") from None
    except (ValueError, UnicodeDecodeError, IsADirectoryError) as exc:
        raise CrossdeployError(f"{path} is not the JSON the pipeline writes ({exc.__class__.__name__}): run `dvc repro` again.") from None


def _finite(value: Any) -> bool:
    """A real number (not a bool, not NaN or infinite)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unknown_variants(settings: Settings, known: list[str]) -> None:
    if isinstance(settings.variants, list):
        unknown = [v for v in settings.variants if v not in known]
        if unknown:
            raise CrossdeployError(
                f"deploy.variants names {', '.join(unknown)}, which benchmark.json does not hold; known: {', '.join(known)}."
            )


def _check_results(results: Any, parity: Any) -> None:
    """benchmark.json and parity.json as the pipeline writes them; anything else is one sentence, not a traceback."""
    if not isinstance(results, dict) or not isinstance(parity, dict) or not all(isinstance(r, dict) for r in parity.values()):
        raise CrossdeployError(
            "benchmark.json and parity.json must be the benchmark and validate stages' JSON objects: re-run `dvc repro`."
        )
    setup = results.get("setup", {})
    pct = setup.get("stability_pct", 0.0) if isinstance(setup, dict) else None
    if not _finite(pct) or not 0 <= pct < 100:
        raise CrossdeployError(
            f"benchmark.json's setup.stability_pct must be a percentage below 100, got {pct!r}: re-run `dvc repro benchmark`."
        )
    for variant, cells in variant_cells(results).items():
        if not isinstance(cells, dict):
            raise CrossdeployError(f"benchmark.json's {variant} is not a table of cells: re-run `dvc repro benchmark`.")
        for name, row in cells.items():
            try:
                parse_cell(name)
            except ValueError:
                raise CrossdeployError(f"benchmark.json's {variant} has a cell named {name!r}, not b<batch>_c<clients>.") from None
            if not isinstance(row, dict):
                raise CrossdeployError(f"benchmark.json's {variant} {name} is not a cell: re-run `dvc repro benchmark`.")
            if row.get("status") == "ok" and not all(_finite(row.get(k)) and row[k] >= 0 for k in ("throughput_ips", "p50_ms", "p99_ms")):
                raise CrossdeployError(f"benchmark.json's {variant} {name} is ok but lacks finite throughput_ips, p50_ms and p99_ms.")


def simplicity(variant: str, batch: int, concurrency: int) -> tuple[int, int, int]:
    """Lower is simpler: in-process before served, fewer clients, then the smaller batch."""
    return (variant in SERVED, concurrency, batch)


def _fidelity(parity: dict[str, Any], variant: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the parity figures that judge the variant's own file, or None; why it may not be chosen, or None).

    A file is judged by its own row, or, where its weights allow no verdict (random weights: `unjudged`), by its
    own row's floor (its outputs follow the input) together with the stand-in's row of the same conversion, on a
    stand-in of the same architecture. Nothing else stands for the file that ships."""
    row = parity.get(variant)
    if row is None:
        return None, "no parity row: its fidelity was never checked"
    status = row.get("status")
    if status == "ok":
        return {"row": variant, "judged_by": "its own file", **row}, None
    if status != "unjudged":
        return None, f"parity {status}: {row.get('reason', '')}".rstrip(": ")
    if row.get("floor") != "passed":
        return (
            None,
            "unjudged, and its own file was never checked against the floor (its outputs following the input): re-run `dvc repro validate`",
        )
    name = TRAINED_PREFIX + variant
    trained = parity.get(name)
    if trained is None:
        return None, f"unjudged here, and no {name} row judges its conversion on a stand-in"
    if trained.get("status") != "ok":
        return None, f"unjudged here, and {name} is {trained.get('status')}: {trained.get('reason', '')}".rstrip(": ")
    model, standin = parity.get(REFERENCE, {}), parity.get(TRAINED_PREFIX + REFERENCE, {})
    if standin.get("arch") != model.get("arch") or model.get("arch") is None:
        return None, (
            f"unjudged here, and the stand-in that judged its conversion is a {standin.get('arch', 'model of unknown architecture')}, "
            f"not the {model.get('arch', 'unknown architecture')} this file holds: set trained.arch to model.arch"
        )
    judged_by = (
        f"the stand-in {standin.get('model', '')} ({standin['arch']} trained on digits), same conversion; this file passed the floor"
    )
    return {"row": name, "judged_by": judged_by, **trained}, None


def _floor_miss(judged: dict[str, Any], settings: Settings) -> str | None:
    for key, floor, param in (
        ("top1_agreement", settings.min_top1_agreement, "min_top1_agreement"),
        ("cosine_min", settings.min_cosine, "min_cosine"),
    ):
        if floor is None:
            continue
        value = judged.get(key)
        if not _finite(value) or value < floor:
            return f"{judged['row']} {key} {value} is below deploy.{param} {floor}"
    return None


def _size_miss(size_mb: float | None, cap: float) -> str | None:
    if size_mb is None:
        return "its size is not in benchmark.json's setup.artifact_mb, so deploy.max_model_mb cannot be checked"
    return f"{size_mb} MB exceeds deploy.max_model_mb {cap}" if size_mb > cap else None


def _cell(variant: str, name: str, row: dict[str, Any], slo: float) -> dict[str, Any]:
    batch, concurrency = parse_cell(name)
    return {
        "variant": variant,
        "cell": name,
        "batch": batch,
        "concurrency": concurrency,
        "served": variant in SERVED,
        "throughput_ips": row["throughput_ips"],
        "p50_ms": row["p50_ms"],
        "p99_ms": row["p99_ms"],
        "margin_ms": round(slo - row["p99_ms"], 4),
        "stable": row.get("stable") is True,
        "peak_pct": row.get("peak_pct"),  # its share of the machine's GEMM peak in its precision (benchmark/peaks.py)
    }


def _not_measured(cells: dict[str, dict[str, Any]]) -> str | None:
    """Why a variant has no measured cell (its first skip or failure reason), or None if it has one."""
    if any(row.get("status") == "ok" for row in cells.values()):
        return None
    for row in cells.values():
        return f"benchmark {row.get('status')}: {row.get('reason', '')}".rstrip(": ")
    return "benchmark: no cells"


def decide(results: dict[str, Any], parity: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The decision (metrics/deploy.json): the choice or the closest miss, the runner-up, what was excluded and why."""
    _check_results(results, parity)
    _unknown_variants(settings, list(variant_cells(results)))
    slo = float(settings.p99_ms)
    setup = results.get("setup", {})
    tie_pct = float(setup.get("stability_pct", 0.0))
    sizes = setup.get("artifact_mb", {})
    excluded: dict[str, str] = {}
    judged: dict[str, dict[str, Any]] = {}
    measured: list[dict[str, Any]] = []
    for variant, cells in variant_cells(results).items():
        reason = None if settings.allows(variant) else "not in deploy.variants"
        row = None
        if reason is None:
            row, reason = _fidelity(parity, variant)
        if reason is None:
            reason = _floor_miss(row, settings)
        if reason is None and settings.max_model_mb is not None:
            reason = _size_miss(sizes.get(variant), settings.max_model_mb)
        if reason is None:
            reason = _not_measured(cells)
        if reason is not None:
            excluded[variant] = reason
            continue
        judged[variant] = {"row": row["row"], "judged_by": row["judged_by"], **{k: row[k] for k in FIDELITY if row.get(k) is not None}}
        measured += [_cell(variant, name, cell, slo) for name, cell in cells.items() if cell.get("status") == "ok"]
    stable = [c for c in measured if c["stable"]]
    meeting = [c for c in stable if c["p99_ms"] <= slo]
    reference = parity.get(REFERENCE, {})
    decision: dict[str, Any] = {
        # what the rows are about: on random weights the decision demonstrates the procedure, nothing more
        "model": {k: reference[k] for k in ("model", "arch", "random_weights") if k in reference},
        "met": bool(meeting),
        "p99_slo_ms": slo,
        "tie_pct": tie_pct,
        "choice": None,
        "runner_up": None,
        "closest": None,
        # cells that met the SLO but whose windows never agreed: reported, not chosen
        "unstable": sorted(f"{c['variant']} {c['cell']}" for c in measured if not c["stable"] and c["p99_ms"] <= slo),
        "excluded": excluded,
        "params": asdict(settings),
    }
    if not meeting:
        # with no stable cell at all, the closest unstable one that misses says how far off it is (an unstable
        # cell under the SLO is listed in `unstable`, not named as a miss)
        pool = stable or [c for c in measured if c["p99_ms"] > slo]
        if pool:
            closest = min(pool, key=lambda c: (c["p99_ms"], -c["throughput_ips"]))
            decision["closest"] = {**closest, "miss_ms": round(closest["p99_ms"] - slo, 4), "fidelity": judged[closest["variant"]]}
        if settings.strict:
            raise SloNotMet(not_met_sentence(decision))
        return decision
    choice, *rest = rank(meeting, tie_pct)
    best = max(c["throughput_ips"] for c in meeting)
    decision["choice"] = {
        **choice,
        "margin_pct": round(100 * choice["margin_ms"] / slo, 2),
        "size_mb": sizes.get(choice["variant"]),
        "fidelity": judged[choice["variant"]],
    }
    if rest:
        decision["runner_up"] = {**rest[0], "fidelity": judged[rest[0]["variant"]], "why_not": why_not(choice, rest[0], tie_pct, best)}
    return decision


def rank(cells: list[dict[str, Any]], tie_pct: float) -> list[dict[str, Any]]:
    """Best first: the cells tied with the best throughput (within tie_pct) simplest first, then the rest by throughput."""
    best = max(c["throughput_ips"] for c in cells)
    floor = best * (1 - tie_pct / 100)
    tied = sorted(
        (c for c in cells if c["throughput_ips"] >= floor),
        key=lambda c: (simplicity(c["variant"], c["batch"], c["concurrency"]), -c["throughput_ips"]),
    )
    others = sorted((c for c in cells if c["throughput_ips"] < floor), key=lambda c: -c["throughput_ips"])
    return tied + others


def why_not(choice: dict[str, Any], other: dict[str, Any], tie_pct: float, best: float) -> str:
    """Why `other` ranked below `choice` (rank's order, said in words)."""
    if other["throughput_ips"] < best * (1 - tie_pct / 100):
        return f"{other['throughput_ips']:.4g} img/s, {100 * (1 - other['throughput_ips'] / best):.1f} % below the best that meets the SLO"
    ours = simplicity(choice["variant"], choice["batch"], choice["concurrency"])
    theirs = simplicity(other["variant"], other["batch"], other["concurrency"])
    what = ("served rather than in-process", "more clients", "a larger batch")
    because = next((f"the less simple deployment ({what[i]})" for i in range(3) if ours[i] != theirs[i]), "as simple, and fewer img/s")
    return (
        f"a tie: {other['throughput_ips']:.4g} against {choice['throughput_ips']:.4g} img/s, within the benchmark's stability "
        f"({tie_pct:g} %) of the best; {because}"
    )


def cell_words(cell: dict[str, Any]) -> str:
    """ "batch 8 x 1 client": a decision's cell as deploy.md, the bundle README and the strict error say it."""
    return f"batch {cell['batch']} x {cell['concurrency']} client{'s' if cell['concurrency'] > 1 else ''}"


def not_met_sentence(decision: dict[str, Any]) -> str:
    closest = decision["closest"]
    if closest is None:
        return f"no variant was eligible and measured, so nothing meets p99 <= {decision['p99_slo_ms']:g} ms."
    return (
        f"no stable cell meets p99 <= {decision['p99_slo_ms']:g} ms; the closest, {closest['variant']} at "
        f"{cell_words(closest)}, has p99 {closest['p99_ms']:.4g} ms, {closest['miss_ms']:.4g} ms over."
    )
