"""The stand-in sweep's summary: margins read the worst passing variant and the best defect, and a verdict
that differs between stand-ins is reported as a flip."""

from __future__ import annotations

from crossdeploy.standin.verdicts import flips, margins, markdown
from crossdeploy.validation.parity import Thresholds


def run(seed: int, minmax_noise: float, verdict: str = "ok") -> dict:
    figures = {"cosine_p1": 0.95, "top1_agreement": 0.98, "accuracy_ratio": 0.99}
    return {
        "seed": seed,
        "verdicts": {
            "minmax/cpu": {"verdict": verdict, "noise_rel": minmax_noise, **figures},
            "defect/noise-20pct": {"verdict": "failed", "noise_rel": 0.2, **figures},
            "defect/shuffled": {"verdict": "failed", "noise_rel": 1.4, "cosine_p1": -0.5, "top1_agreement": 0.1, "accuracy_ratio": 0.1},
        },
    }


def test_margins_and_flips():
    int8 = Thresholds(top1_agreement=0.9, cosine_p1=0.85, noise_rel_max=0.15, accuracy_ratio_min=0.95)
    steady = [run(0, 0.08), run(1, 0.11)]
    summary = margins(steady, int8)
    assert summary["noise_rel"] == {"bound": 0.15, "worst_passing": 0.11, "best_defect": 0.2}
    assert summary["top1_agreement"]["best_defect"] == 0.98  # noise does not move top-1: only noise_rel tells it apart
    assert {k: v for k, v in flips(steady).items() if len(v) > 1} == {}
    flipped = steady + [run(2, 0.16, "failed")]
    assert flips(flipped)["minmax/cpu"] == {"ok", "failed"}
    assert margins(flipped, int8)["noise_rel"]["worst_passing"] == 0.11  # a failed run is not a passing figure


def test_the_table_gives_each_variant_its_figure_nearest_the_bound():
    int8 = Thresholds(top1_agreement=0.9, cosine_p1=0.85, noise_rel_max=0.15, accuracy_ratio_min=0.95)
    table = markdown([run(0, 0.08), run(1, 0.11)], int8).splitlines()
    assert table[2].startswith("| bound | | <= 0.15 | >= 0.85 |")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in table[3:]}
    assert rows["minmax/cpu"][:2] == ["ok x2", "0.110"]  # always passed: its worst noise
    assert rows["defect/noise-20pct"][:2] == ["failed x2", "0.200"]
    assert rows["defect/shuffled"][1:3] == ["1.400", "-0.500"]  # always failed: its best figures
    flipped = markdown([run(0, 0.08), run(1, 0.16, "failed")], int8)
    assert "| minmax/cpu | failed x1 / ok x1 | 0.160 |" in flipped
