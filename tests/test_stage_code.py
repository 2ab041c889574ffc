"""Every stage depends on all the code it runs, and no stage script can shadow a package it imports.

Static and fast: the import graph comes from `ast`, the stage commands and deps from dvc.yaml.
"""

from __future__ import annotations

import ast
import importlib.machinery
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, module_imports

PACKAGE = "crossdeploy"
LOCAL_TOP_LEVEL = {PACKAGE, "stages", "tests"}


def dvc_stages(root: Path = ROOT) -> dict[str, dict]:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def stage_script(cmd: str, root: Path = ROOT) -> tuple[Path, Path]:
    """(script the command runs, the directory Python puts first on sys.path for it)."""
    words = shlex.split(cmd)
    assert words[0] == "python", f"stage command {cmd!r} does not start with python"
    if words[1] == "-m":
        return root / Path(*words[2].split(".")).with_suffix(".py"), root
    script = root / words[1]
    return script, script.parent


def _module_file(name: str, root: Path) -> Path | None:
    path = root / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def code_closure(script: Path, root: Path = ROOT) -> set[Path]:
    """The project's own files a script can run: its imports, theirs, and each package's __init__."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in module_imports(path, root):
            parts = name.split(".")
            if parts[0] not in LOCAL_TOP_LEVEL:
                continue
            for i in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:i]), root)
                if found is not None:
                    todo.append(found)
    return seen


def runs_no_code(path: Path) -> bool:
    """A docstring and constants only (crossdeploy/__init__.py): nothing in it can change an output."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            continue
        return False
    return True


def undeclared_code(stage: dict, root: Path = ROOT) -> list[str]:
    """The files a stage runs that neither it nor a folder above it lists in deps."""
    script, _ = stage_script(stage["cmd"], root)
    deps = [Path(d if isinstance(d, str) else next(iter(d))) for d in stage.get("deps", [])]
    missing = []
    for path in sorted(code_closure(script, root)):
        relative = path.relative_to(root)
        if runs_no_code(path):
            continue
        if not any(relative == dep or dep in relative.parents for dep in deps):
            missing.append(relative.as_posix())
    return missing


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_stage_lists_every_module_it_runs_in_deps(name):
    missing = undeclared_code(dvc_stages()[name])
    assert not missing, f"stage {name} runs {', '.join(missing)} but dvc.yaml does not list them in its deps"


def test_the_deps_check_catches_a_planted_import(tmp_path):
    """Plant an import of a module the stage does not list, and the check names it."""
    for folder in ("stages", PACKAGE):
        (tmp_path / folder).mkdir()
    (tmp_path / PACKAGE / "__init__.py").write_text('"""package."""\n__version__ = "0"\n')
    (tmp_path / PACKAGE / "listed.py").write_text("def f():\n    from crossdeploy import helper\n")
    (tmp_path / PACKAGE / "helper.py").write_text("X = 1\nprint(X)\n")
    (tmp_path / "stages" / "__init__.py").write_text('"""stages."""\n')
    (tmp_path / "stages" / "step.py").write_text("from crossdeploy.listed import f\n")
    stage = {"cmd": "python -m stages.step", "deps": ["stages/step.py", "crossdeploy/listed.py"]}
    assert undeclared_code(stage, tmp_path) == ["crossdeploy/helper.py"]
    stage["deps"].append("crossdeploy")
    assert undeclared_code(stage, tmp_path) == []


#: the one module of the benchmark package both the benchmark and the report stage run: the shape of
#: benchmark.json (cell names, queries over its rows)
RESULTS_SHAPE = Path(PACKAGE, "benchmark", "cells.py")


def _covers(deps: list[Path], path: Path) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


def crossed_benchmark_code(owner: dict, other: dict, root: Path = ROOT) -> list[str]:
    """The benchmark package's and runtimes' modules `owner` runs (apart from the results' shape) that
    `other` runs too or lists in its deps: editing one would re-run `other` for nothing."""
    own = {
        path.relative_to(root)
        for path in code_closure(stage_script(owner["cmd"], root)[0], root)
        if path.relative_to(root).parts[:2] in {(PACKAGE, "benchmark"), (PACKAGE, "runtimes")} and not runs_no_code(path)
    } - {RESULTS_SHAPE}
    theirs = {path.relative_to(root) for path in code_closure(stage_script(other["cmd"], root)[0], root)}
    deps = [Path(d if isinstance(d, str) else next(iter(d))) for d in other.get("deps", [])]
    return sorted(path.as_posix() for path in own if path in theirs or _covers(deps, path))


@pytest.mark.parametrize("owner,other", [("benchmark", "report"), ("report", "benchmark")])
def test_measuring_and_reporting_code_stay_apart(owner, other):
    """Editing how the figures are judged or drawn re-runs only the report; editing how they are measured
    re-runs the benchmark, and the report only because benchmark.json changed."""
    stages = dvc_stages()
    crossed = crossed_benchmark_code(stages[owner], stages[other])
    assert not crossed, f"stage {other} runs or depends on {', '.join(crossed)}, which are stage {owner}'s code"


def test_the_apart_check_catches_a_planted_import(tmp_path):
    """Plant the report's import of a measuring module, and a benchmark dep on the report's code: both named."""
    for folder in ("stages", PACKAGE, f"{PACKAGE}/benchmark"):
        (tmp_path / folder).mkdir()
    (tmp_path / "stages" / "__init__.py").write_text('"""stages."""\n')
    (tmp_path / PACKAGE / "__init__.py").write_text('"""package."""\n')
    (tmp_path / PACKAGE / "benchmark" / "__init__.py").write_text('"""benchmark."""\n')
    (tmp_path / PACKAGE / "benchmark" / "cells.py").write_text("def cell_name():\n    pass\n")
    (tmp_path / PACKAGE / "benchmark" / "run.py").write_text("from crossdeploy.benchmark.cells import cell_name\n")
    (tmp_path / PACKAGE / "benchmark" / "report.py").write_text("from crossdeploy.benchmark.cells import cell_name\n")
    (tmp_path / "stages" / "benchmark.py").write_text("from crossdeploy.benchmark.run import cell_name\n")
    (tmp_path / "stages" / "report.py").write_text("from crossdeploy.benchmark.report import cell_name\n")
    benchmark = {"cmd": "python -m stages.benchmark", "deps": ["stages/benchmark.py", "crossdeploy/benchmark/run.py"]}
    report = {"cmd": "python -m stages.report", "deps": ["stages/report.py", "crossdeploy/benchmark/report.py"]}
    assert crossed_benchmark_code(benchmark, report, tmp_path) == []  # sharing the results' shape is fine
    (tmp_path / "stages" / "report.py").write_text(
        "from crossdeploy.benchmark.report import cell_name\nfrom crossdeploy.benchmark import run\n"
    )
    assert crossed_benchmark_code(benchmark, report, tmp_path) == ["crossdeploy/benchmark/run.py"]
    (tmp_path / "stages" / "report.py").write_text("from crossdeploy.benchmark.report import cell_name\n")
    benchmark["deps"].append("crossdeploy/benchmark")
    assert crossed_benchmark_code(report, benchmark, tmp_path) == ["crossdeploy/benchmark/report.py"]


def third_party_imports(root: Path = ROOT) -> set[str]:
    """Top-level names of the non-stdlib packages the project's code imports."""
    names: set[str] = set()
    for path in [*(root / PACKAGE).rglob("*.py"), *(root / "stages").glob("*.py")]:
        for name in module_imports(path, root):
            top = name.split(".")[0]
            if top and top not in LOCAL_TOP_LEVEL and top not in sys.stdlib_module_names:
                names.add(top)
    return names


def shadowed(cmd: str, names: set[str], root: Path = ROOT) -> list[str]:
    """Names that the first sys.path entry of a stage command would resolve inside the repository."""
    _, first = stage_script(cmd, root)
    return sorted(n for n in names if importlib.machinery.PathFinder.find_spec(n, [str(first)]) is not None)


def test_third_party_imports_are_found():
    """Guard the guard: if the scan found nothing, the shadowing test would pass on anything."""
    assert {"torch", "onnxruntime", "tensorflow", "tensorrt", "yaml"} <= third_party_imports()


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_stage_command_cannot_shadow_a_package(name):
    hits = shadowed(dvc_stages()[name]["cmd"], third_party_imports())
    assert not hits, f"`{dvc_stages()[name]['cmd']}` puts the repository's {', '.join(hits)} before the installed package"


def test_running_a_stage_script_by_path_would_shadow_tensorrt():
    """The defect this guards against: `python stages/tensorrt.py` makes `import tensorrt` load the script."""
    assert shadowed("python stages/tensorrt.py", third_party_imports()) == ["tensorrt"]
