"""Each install brings one ONNX Runtime build: the `cpu` extra the CPU one, the `gpu` extra onnxruntime-gpu
and never the CPU one beside it. Both wheels write the same `onnxruntime` module and whichever pip installs
last wins, so a GPU install that also pulls `onnxruntime` can end without the CUDA and TensorRT providers.

The tests read crossdeploy's declared requirements from its installed metadata (re-install after editing
pyproject.toml) and follow the base dependencies through the metadata of the distributions installed here."""

from __future__ import annotations

import functools
import importlib.metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ONNXRUNTIME_BUILDS = frozenset({"onnxruntime", "onnxruntime-gpu"})


@functools.cache
def installed_requires(name: str) -> tuple[str, ...] | None:
    """The requirement strings `name` declares, or None where it is not installed here."""
    try:
        return tuple(importlib.metadata.requires(name) or ())
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def parse(string: str) -> Requirement:
    return Requirement(string)


def applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    """Whether pip installs `requirement` here when its distribution is installed with `extras`."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def onnxruntime_builds(requirements, extras, requires=installed_requires) -> dict[str, tuple[str, ...]]:
    """The ONNX Runtime builds that `requirements`, installed with `extras`, bring, each with one chain of
    distributions that brings it. Dependencies are followed through `requires(name)` (their requirement
    strings, or None where the walk cannot see further), with the extras each requirement asks for."""
    found: dict[str, tuple[str, ...]] = {}
    followed: set[tuple[str, frozenset[str]]] = set()
    pending = [(tuple(requirements), frozenset(extras), ())]
    while pending:
        strings, active, chain = pending.pop()
        for string in strings:
            requirement = parse(string)
            if not applies(requirement, active):
                continue
            name = canonicalize_name(requirement.name)
            here = chain + (name,)
            if name in ONNXRUNTIME_BUILDS:
                found.setdefault(name, here)
            asked = frozenset(requirement.extras)
            if (name, asked) in followed:
                continue
            followed.add((name, asked))
            below = requires(requirement.name)
            if below is not None:
                pending.append((tuple(below), asked, here))
    return found


def declared() -> tuple[str, ...]:
    requirements = installed_requires("crossdeploy")
    assert requirements is not None, 'crossdeploy is not installed: pip install -e ".[cpu,test]"'
    return requirements


@pytest.mark.parametrize(
    ("extras", "builds"),
    [
        ((), set()),
        (("test",), set()),
        (("cpu",), {"onnxruntime"}),
        (("cpu", "test"), {"onnxruntime"}),
        (("gpu",), {"onnxruntime-gpu"}),
        (("gpu", "test"), {"onnxruntime-gpu"}),
    ],
)
def test_each_install_brings_one_onnxruntime_build(extras, builds):
    found = onnxruntime_builds(declared(), extras)
    assert set(found) == builds, f"crossdeploy[{','.join(extras)}]: " + "; ".join(
        f"{build} via {' > '.join(chain)}" for build, chain in sorted(found.items())
    )


def test_the_walk_sees_every_base_dependency():
    """The transitive check reads installed metadata, so it only sees as far as the base is installed."""
    base = [Requirement(string) for string in declared()]
    unseen = [r.name for r in base if applies(r, frozenset()) and installed_requires(r.name) is None]
    assert unseen == [], f"not installed here, so not followed: {unseen}"


def test_planted_defects_are_caught():
    # a base dependency on the CPU build beside the gpu extra
    planted = ["numpy>=1.26", "onnxruntime>=1.27", 'onnxruntime-gpu>=1.27; extra == "gpu"']
    assert set(onnxruntime_builds(planted, {"gpu"}, requires=lambda name: None)) == ONNXRUNTIME_BUILDS

    # a base dependency that brings it two levels down, through an extra it asks of its own dependency
    metadata = {
        "onnx2tf": ("onnxslim[check]>=0.1",),
        "onnxslim": ("sympy", 'onnxruntime; extra == "check"', 'vllm; extra == "llm"'),
        "onnxruntime": ("numpy",),
    }
    found = onnxruntime_builds(["onnx2tf", 'onnxruntime-gpu; extra == "gpu"'], {"gpu"}, requires=metadata.get)
    assert found == {
        "onnxruntime": ("onnx2tf", "onnxslim", "onnxruntime"),
        "onnxruntime-gpu": ("onnxruntime-gpu",),
    }
    # the extra is not asked for: nothing brought
    metadata["onnx2tf"] = ("onnxslim>=0.1",)
    assert set(onnxruntime_builds(["onnx2tf"], set(), requires=metadata.get)) == set()

    # through real installed metadata: crossdeploy's own, with the extra a requirement asks for
    assert onnxruntime_builds(["crossdeploy[cpu]"], set()) == {"onnxruntime": ("crossdeploy", "onnxruntime")}
