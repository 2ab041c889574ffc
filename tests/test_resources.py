"""Each stage records its wall time and peak RSS in metrics/resources/<stage>.json (run_stage), so a
regression shows in `dvc metrics diff`. Run as real stage processes: a throwaway `stages` package in a
temporary directory, started the way dvc.yaml starts every stage (`python -m stages.<name>`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from crossdeploy.stage import stage_name
from tests.conftest import ROOT

STAGE = """
import numpy as np
from crossdeploy.stage import run_stage

def main():
    held = np.ones({mb} * 2**20, dtype=np.uint8)  # touched, so resident
    assert held.sum() == {mb} * 2**20

if __name__ == "__main__":
    run_stage(main)
"""


STAGE_WITH_CHILD = """
import subprocess, sys
import numpy as np
from crossdeploy.stage import run_stage

HOLD = "import numpy as np, time; held = np.ones({child_mb} * 2**20, dtype=np.uint8); held.sum(); time.sleep(1.5)"

def main():
    held = np.ones({parent_mb} * 2**20, dtype=np.uint8)
    held.sum()
    subprocess.run([sys.executable, "-c", HOLD], check=True)

if __name__ == "__main__":
    run_stage(main)
"""


def _run_stage(tmp_path, name: str, mb: int, source: str | None = None) -> dict:
    (tmp_path / "stages").mkdir(exist_ok=True)
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / f"{name}.py").write_text(source or STAGE.format(mb=mb))
    (tmp_path / "params.yaml").write_text(f"paths:\n  resources:\n    {name}: metrics/resources/{name}.json\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=tmp_path, env=env, check=True)
    return json.loads((tmp_path / "metrics" / "resources" / f"{name}.json").read_text())


def test_a_stage_records_its_wall_time_and_peak_rss(tmp_path):
    small = _run_stage(tmp_path, "small", 1)
    large = _run_stage(tmp_path, "large", 400)
    assert set(small) == {"wall_s", "peak_rss_mb", "own_peak_rss_mb"}
    assert small["wall_s"] >= 0 and small["own_peak_rss_mb"] > 0 and small["peak_rss_mb"] >= small["own_peak_rss_mb"]
    # the 400 MB array shows in the peak (the planted defect: a record that ignores the stage's memory)
    assert large["own_peak_rss_mb"] - small["own_peak_rss_mb"] > 300 and large["peak_rss_mb"] - small["peak_rss_mb"] > 300


def test_the_peak_counts_the_processes_a_stage_started_but_not_their_fork_copy(tmp_path):
    """A child holding 400 MB while the stage holds little counts in the stage's peak (getrusage's own
    figure misses it); a tiny child started while the stage holds 400 MB does not read as 400 MB more
    (getrusage's children figure would: the planted defect it replaces)."""
    child = _run_stage(tmp_path, "child", 0, STAGE_WITH_CHILD.format(child_mb=400, parent_mb=1))
    parent = _run_stage(tmp_path, "parent", 0, STAGE_WITH_CHILD.format(child_mb=1, parent_mb=400))
    assert child["peak_rss_mb"] - child["own_peak_rss_mb"] > 300
    assert parent["peak_rss_mb"] - parent["own_peak_rss_mb"] < 200


def test_a_stage_started_by_a_large_process_does_not_inherit_its_peak(tmp_path):
    """getrusage's peak carries over from the process a stage was forked from (the planted defect: the
    full test suite's 9 GB runner made a 1 MB stage read 9.1 GB); the stage's own peak is its own."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "tiny.py").write_text(STAGE.format(mb=1))
    (tmp_path / "params.yaml").write_text("paths:\n  resources:\n    tiny: metrics/resources/tiny.json\n")
    launcher = (
        "import subprocess, sys, numpy as np; held = np.ones(600 * 2**20, dtype=np.uint8); held.sum(); "
        "subprocess.run([sys.executable, '-m', 'stages.tiny'], check=True)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", launcher], cwd=tmp_path, env=env, check=True)
    record = json.loads((tmp_path / "metrics" / "resources" / "tiny.json").read_text())
    assert record["own_peak_rss_mb"] < 400 and record["peak_rss_mb"] < 400, record


STAGE_THAT_EXITS = """
import atexit, sys
from pathlib import Path
from crossdeploy.stage import run_stage

class Teardown:
    def __del__(self):
        Path("teardown-ran").write_text("the interpreter tore the module down")

KEPT = Teardown()  # a module global: only the interpreter's teardown destroys it

def main():
    atexit.register(lambda: Path("exit-handler-ran").write_text("yes"))
    sys.stdout.write("output still in the buffer")

if __name__ == "__main__":
    run_stage(main)
"""


def test_a_finished_stage_skips_the_interpreters_teardown_but_not_its_exit_handlers_or_output(tmp_path):
    """Tearing TensorFlow and PyTorch down costs 1 to 3 s after each stage; a finished stage ends at once.
    The planted defect, a normal exit, runs the module global's destructor."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "quick.py").write_text(STAGE_THAT_EXITS)
    (tmp_path / "params.yaml").write_text("paths:\n  resources:\n    quick: metrics/resources/quick.json\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "stages.quick"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "output still in the buffer"
    assert (tmp_path / "exit-handler-ran").is_file() and (tmp_path / "metrics" / "resources" / "quick.json").is_file()
    assert not (tmp_path / "teardown-ran").exists()
    # the same module run by a plain interpreter exit: the destructor runs (what the test would see unfixed)
    plain = STAGE_THAT_EXITS.replace("run_stage(main)", "main()")
    (tmp_path / "stages" / "plain.py").write_text(plain)
    subprocess.run([sys.executable, "-m", "stages.plain"], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert (tmp_path / "teardown-ran").is_file()
    # a caller that imports the stage and runs it (a notebook, a test runner) goes on after it
    caller = "import stages.quick as s; from crossdeploy.stage import run_stage; run_stage(s.main); print(' and the caller goes on')"
    run = subprocess.run([sys.executable, "-c", caller], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == "output still in the buffer and the caller goes on\n", run.stdout + run.stderr


def test_a_function_outside_a_stage_module_records_nothing():
    def main():
        pass

    # a test calling run_stage must not write into the repository; stages are covered above, as processes
    assert stage_name(main) is None


def test_dvc_declares_each_stage_record_as_an_uncached_metric():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    paths = yaml.safe_load((ROOT / "params.yaml").read_text())["paths"]["resources"]
    assert set(paths) == set(stages)  # every stage has its record, named after it (run_stage writes paths.resources.<stage>)
    for stage, spec in stages.items():
        assert {"${paths.resources." + stage + "}": {"cache": False}} in spec["metrics"], stage
