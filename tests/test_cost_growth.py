"""The cost-growth table on synthetic experiment records (the experiment itself runs the whole pipeline three
times, so it is run by hand: docs/experiments.md, Cost growth), and the model-size figures on a real exported program."""

from __future__ import annotations

import pytest

from crossdeploy.experiments.cost_growth import LINEAR_LIMIT, growth, markdown, table

#: torchvision's ResNets as the model stage measures them (parameters, GFLOPs per 224 px image)
SIZES = {"resnet18": (11_689_512, 3.63), "resnet50": (25_557_032, 8.18), "resnet101": (44_549_160, 15.6)}


def _rows(stage_cost) -> dict:
    """arch -> its experiment's record, each stage's cost from stage_cost(stage, parameters, gflops)."""
    rows = {}
    for arch, (parameters, gflops) in SIZES.items():
        stages = {}
        for stage in ("model", "export", "benchmark"):
            wall, rss = stage_cost(stage, parameters, gflops)
            stages[stage] = {"wall_s": wall, "peak_rss_mb": rss, "own_peak_rss_mb": rss}
        rows[arch] = {"pipeline": "ok", "parameters": parameters, "gflops_per_image": gflops, "stages": stages}
    return rows


def test_growth_is_the_log_log_slope():
    assert growth([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert growth([1, 2, 4], [1, 4, 16]) == pytest.approx(2.0)
    assert growth([1, 2, 4], [5, 5, 5]) == pytest.approx(0.0)
    assert growth([3], [1]) is None and growth([2, 2], [1, 3]) is None  # no slope from one size
    assert growth([1, 2, 4], [1, 0, 4]) is None  # a zero cost is not a measurement


def test_a_stage_that_grows_faster_than_the_model_is_named():
    def cost(stage, parameters, gflops):
        if stage == "benchmark":  # quadratic in FLOPs: the planted defect
            return 2.0 * gflops**2, 900 + parameters / 1e5
        return 10.0 + 3.0 * gflops, 700 + parameters / 2e5  # a fixed part plus a linear one

    rows = {r["stage"]: r for r in table(_rows(cost))}
    assert rows["benchmark"]["time_growth"] == pytest.approx(2.0, abs=0.01)
    assert rows["benchmark"]["worse_than_linear"] == ["wall time vs FLOPs"]
    assert rows["export"]["time_growth"] < 1 and rows["export"]["worse_than_linear"] == []
    assert rows["model"]["rss_growth"] < LINEAR_LIMIT
    assert rows["export"]["wall_s"]["resnet101"] == pytest.approx(10.0 + 3.0 * 15.6)


def test_the_markdown_lists_every_stage_and_what_was_not_measured():
    rows = _rows(lambda stage, p, g: (10.0 * g, 1024.0 + p / 1e4))
    rows["resnet152"] = {"pipeline": "experiment queued"}
    text = markdown({"date": "2026-11-27", "machine": "Test CPU, 2 cores, no GPU", "rows": rows})
    assert "| stage | resnet18 | resnet50 | resnet101 | time growth | RSS growth | worse than linear |" in text
    assert "| benchmark | 36 s / 2.1 GB | 82 s / 3.5 GB | 156 s / 5.4 GB | 1.00 | 0.68 | no |" in text
    assert "resnet18 11.7 M parameters, 3.6 GFLOPs/image" in text
    assert "- resnet152: experiment queued" in text


def test_model_size_counts_parameters_and_flops_of_the_exported_program():
    import torch

    from crossdeploy.model.size import model_size

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10))
    program = torch.export.export(model.eval(), (torch.zeros(1, 3, 16, 16),))
    size = model_size(program, 16)
    assert size["parameters"] == 8 * 3 * 9 + 8 * 16 * 16 * 10 + 10
    # two FLOPs per multiply-add: the convolution's 8 x 3 x 9 per output pixel, then the linear layer's
    assert size["gflops_per_image"] == pytest.approx(2 * (8 * 3 * 9 * 16 * 16 + 8 * 16 * 16 * 10) / 1e9, abs=1e-4)


def test_publish_replaces_only_what_lies_between_the_markers(tmp_path):
    from crossdeploy.experiments.sweep import publish

    readme = tmp_path / "README.md"
    markers = ("<!-- t:start -->", "<!-- t:end -->")
    readme.write_text(f"intro\n{markers[0]}\nold table\n{markers[1]}\noutro\n")
    publish(tmp_path / "metrics" / "t", {"a": 1}, "| new |\n", readme, markers)
    assert readme.read_text() == f"intro\n{markers[0]}\n| new |\n{markers[1]}\noutro\n"
    assert (tmp_path / "metrics" / "t.json").read_text() == '{\n  "a": 1\n}\n' and (
        tmp_path / "metrics" / "t.md"
    ).read_text() == "| new |\n"
    bare = tmp_path / "BARE.md"
    bare.write_text("no markers\n")
    publish(tmp_path / "t2", {}, "| x |\n", bare, markers)
    assert bare.read_text() == "no markers\n"
