"""Layers point down: no module imports from a layer above its own, lazy imports included.

Static and fast: the imports come from `ast` (tests.test_stage_code._imports, which also sees the
imports inside functions: they run when the function does). Two packages that import each other
cannot be changed or tested one at a time; the fix is to move the shared piece below both, as the
exceptions in errors.py were.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ROOT, module_imports

#: The layers, lowest first. A module may import from its own layer and the layers below it, never from
#: one above. A name is a module of crossdeploy/, one of its subpackages (whose modules import each other
#: freely), a module of a subpackage placed on its own ("validation.parity": the most specific name wins),
#: or a top-level folder of scripts; "crossdeploy" is the package's own __init__.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),  # the exceptions every layer raises or catches
    (
        "crossdeploy",
        "atomic",
        "layout",
        "params",
        "compose",
        "resources",
        "stage",
        "build_failures",
        "device_info",
        "tensorflow.env",
        "tensorflow.saved_model",
        "experiments.sweep",
    ),
    # data, conversions and comparisons: each works on files and arrays, not on runtimes
    ("data", "model", "onnx", "tensorflow", "validation.parity", "validation.report"),
    ("tensorrt", "serving"),  # engines and servers: runtimes/ drives them
    ("runtimes",),  # one Runner per framework
    ("variants",),  # the table of what runs on which runtime
    ("validation", "benchmark", "standin", "deploy"),  # what the stages run
    # entry points: nothing imports them
    ("cli", "gpu_check", "standin.verdicts", "experiments", "stages", "hydra_plugins"),
)

_LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}
_SOURCE_FOLDERS = ("crossdeploy", "stages", "hydra_plugins")


def _unit(module: str) -> str | None:
    """The LAYERS name a dotted module name belongs to; None for a module outside the project."""
    parts = module.split(".")
    if parts[0] != "crossdeploy":
        return parts[0] if parts[0] in _SOURCE_FOLDERS else None
    if len(parts) == 1:
        return "crossdeploy"
    dotted = ".".join(parts[1:3])  # a subpackage's module placed on its own
    return dotted if dotted in _LAYER else parts[1]


def _sources(root: Path) -> dict[Path, str]:
    """Every project source file -> its LAYERS name."""
    files = {}
    for folder in _SOURCE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            files[path] = _unit(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return files


def unplaced(root: Path) -> list[str]:
    """Project modules LAYERS does not place: a new module must be given a layer."""
    return sorted({f"{unit} ({path.relative_to(root)})" for path, unit in _sources(root).items() if unit not in _LAYER})


def upward_imports(root: Path) -> list[str]:
    """Each import of a module from a layer above the importing module's, as a readable line."""
    found = []
    for path, unit in _sources(root).items():
        if unit not in _LAYER:
            continue  # unplaced() reports it
        for name in sorted(module_imports(path, root)):
            target = _unit(name)
            if target in _LAYER and _LAYER[target] > _LAYER[unit]:
                found.append(f"{path.relative_to(root)} ({unit}, layer {_LAYER[unit]}) imports {name} ({target}, layer {_LAYER[target]})")
    return sorted(set(found))


def test_no_module_imports_from_a_layer_above_it():
    assert upward_imports(ROOT) == []


def test_every_module_has_a_layer_and_every_layer_name_a_module():
    assert unplaced(ROOT) == []
    present = set(_sources(ROOT).values())
    assert sorted(set(_LAYER) - present) == []  # a name left behind by a rename or a removal


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_an_upward_import_is_caught_lazy_or_not(tmp_path):
    _write(tmp_path, "crossdeploy/__init__.py", "")
    _write(tmp_path, "crossdeploy/errors.py", "class CrossdeployError(Exception): ...\n")
    _write(tmp_path, "crossdeploy/variants.py", "from crossdeploy.errors import CrossdeployError\n")
    _write(tmp_path, "crossdeploy/runtimes/__init__.py", "")
    _write(tmp_path, "crossdeploy/runtimes/base.py", "from crossdeploy.tensorrt import engines\n")
    _write(tmp_path, "crossdeploy/tensorrt/__init__.py", "")
    # the defect this test guards: tensorrt/ importing runtimes/, which imports tensorrt/
    _write(tmp_path, "crossdeploy/tensorrt/engines.py", "from crossdeploy.runtimes.base import RuntimeUnavailable\n")
    # and one only a function runs
    _write(tmp_path, "crossdeploy/params.py", "def load():\n    from crossdeploy import variants\n")
    assert upward_imports(tmp_path) == [
        "crossdeploy/params.py (params, layer 1) imports crossdeploy.variants (variants, layer 5)",
        "crossdeploy/tensorrt/engines.py (tensorrt, layer 3) imports crossdeploy.runtimes.base (runtimes, layer 4)",
        "crossdeploy/tensorrt/engines.py (tensorrt, layer 3) imports crossdeploy.runtimes.base.RuntimeUnavailable (runtimes, layer 4)",
    ]


def test_a_module_without_a_layer_is_caught(tmp_path):
    _write(tmp_path, "crossdeploy/__init__.py", "")
    _write(tmp_path, "crossdeploy/helpers.py", "")
    assert unplaced(tmp_path) == ["helpers (crossdeploy/helpers.py)"]


def test_a_subpackage_module_placed_on_its_own_keeps_its_layer(tmp_path):
    """validation.parity sits below the runtimes, though validation/ (its package) sits above them."""
    _write(tmp_path, "crossdeploy/__init__.py", "")
    _write(tmp_path, "crossdeploy/variants.py", "")
    _write(tmp_path, "crossdeploy/validation/__init__.py", "")
    _write(tmp_path, "crossdeploy/validation/run.py", "from crossdeploy.variants import Variant\n")
    _write(tmp_path, "crossdeploy/validation/parity.py", "from crossdeploy.variants import Variant\n")
    assert upward_imports(tmp_path) == [
        "crossdeploy/validation/parity.py (validation.parity, layer 2) imports crossdeploy.variants (variants, layer 5)",
        "crossdeploy/validation/parity.py (validation.parity, layer 2) imports crossdeploy.variants.Variant (variants, layer 5)",
    ]
