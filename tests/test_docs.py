"""The README and docs/ say only what exists: every `-S key=value` names a composed param, every
`crossdeploy <command> --flag` is in the real parser, every repository path shown in backticks exists (or, under
models/ and metrics/, is a pipeline output), every relative link reaches a file and heading. Each check is
proven to fail on a planted defect. Also: the README's first screen has the two commands, the pipeline picture
has dvc.yaml's edges, and docs/layout.md lists every module. Static and fast: no stage runs."""

from __future__ import annotations

import argparse
import functools
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: the repository's top-level folders: a backticked token starting with one of these is a repository path
TOP = ("crossdeploy/", "stages/", "conf/", "tests/", "scripts/", "docs/", "metrics/", "models/", ".ci/", ".dvc/", "hydra_plugins/")
#: DVC outputs, absent from a clean clone: checked against the pipeline's declared outputs, not the disk
OUTPUT_TREES = ("models/", "metrics/")


# ---- reading Markdown ----


def split_code(text: str) -> tuple[list[str], str]:
    """(the lines of fenced code blocks, the prose with those blocks blanked out)."""
    code, prose, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
        elif fenced:
            code.append(line)
            prose.append("")
        else:
            prose.append(line)
    return code, "\n".join(prose)


def inline_code(prose: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"(`+)(.+?)\1", prose)]


def snippets(text: str) -> list[str]:
    """What a reader may copy: each line of a code block, and each inline code span."""
    code, prose = split_code(text)
    return code + inline_code(prose)


# ---- (a) params: `dvc exp run -S key=value` ----

SET_PARAM = re.compile(r"(?<![\w-])(?:-S|--set-param)[ \t]*(['\"]?)([+~]*)([A-Za-z_][\w.-]*)=([^\s'\"`]*)")


@functools.cache
def _trees(root: Path = ROOT) -> tuple[dict, ...]:
    """Where a key may live: the composed params.yaml, then conf/ (keys only one target or model sets)."""
    conf = root / "conf"
    trees = [yaml.safe_load((root / "params.yaml").read_text()), yaml.safe_load((conf / "config.yaml").read_text())]
    for group in sorted(p for p in conf.iterdir() if p.is_dir()):
        for option in sorted(group.glob("*.yaml")):
            text = option.read_text()
            tree = yaml.safe_load(text) or {}
            trees.append(tree if "@package _global_" in text else {group.name: tree})
    return tuple(trees)


def _has_key(tree: object, parts: list[str]) -> bool:
    for part in parts:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def param_problems(text: str, root: Path = ROOT) -> list[str]:
    """Every `-S key=value` (also `-S 'key=value'`, `-Skey=value`): the key is a param of the composed params
    (or of a conf/ option), or a config group (`target`, `model`) whose value names one of its files."""
    problems = []
    for m in SET_PARAM.finditer(text):
        prefix, key, value = m.group(2), m.group(3), m.group(4)
        if "+" in prefix:  # Hydra's append: a new key by design
            continue
        group = root / "conf" / key
        if "." not in key and group.is_dir():
            missing = [v for v in value.split(",") if v and "<" not in v and not (group / f"{v}.yaml").is_file()]
            problems += [f"-S {key}={v}: conf/{key}/ has no {v}.yaml" for v in missing]
        elif not any(_has_key(tree, key.split(".")) for tree in _trees(root)):
            problems.append(f"-S {key}=...: no param {key} in params.yaml or conf/")
    return problems


# ---- (b) commands: `crossdeploy <command> --flag`, `python -m crossdeploy.<module>` ----


def cli_options() -> dict[str, set[str]]:
    """The real `crossdeploy` parser: command -> its option strings."""
    from crossdeploy.cli import _parser

    commands = {}
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands[name] = {option for a in sub._actions for option in a.option_strings}
    return commands


CLI = re.compile(r"(?<![\w/.-])crossdeploy[ \t]+([a-z][\w-]*)")
MODULE = re.compile(r"python3? -m ((?:crossdeploy|stages)(?:\.\w+)+)")


def command_problems(text: str, root: Path = ROOT, commands: dict[str, set[str]] | None = None) -> list[str]:
    commands = cli_options() if commands is None else commands
    problems = []
    for snippet in snippets(text):
        calls = list(CLI.finditer(snippet))
        for i, call in enumerate(calls):
            command = call.group(1)
            if command not in commands:
                problems.append(f"crossdeploy {command}: no such command (the parser has {', '.join(sorted(commands))})")
                continue
            # the flags up to the next `crossdeploy`, its comment included (`# --engine auto|tfserving|kserve`)
            tail = snippet[call.end() : calls[i + 1].start() if i + 1 < len(calls) else len(snippet)]
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", tail):
                if flag not in commands[command]:
                    problems.append(f"crossdeploy {command} {flag}: no such option")
    for m in MODULE.finditer(text):
        module = root.joinpath(*m.group(1).split("."))
        if not (module.with_suffix(".py").is_file() or (module / "__main__.py").is_file()):
            problems.append(f"python -m {m.group(1)}: no such module")
    return problems


# ---- (c) repository paths in backticks ----


@functools.cache
def declared_outputs(root: Path = ROOT) -> tuple[str, ...]:
    """Every output the pipeline declares: params.yaml's paths (dvc.yaml's outs, metrics and plots are
    ${paths.*}) and any literal path in dvc.yaml's outs."""
    params = yaml.safe_load((root / "params.yaml").read_text())

    def leaves(node):
        return [v for x in node.values() for v in leaves(x)] if isinstance(node, dict) else [str(node)]

    outputs = set(leaves(params["paths"]))
    for stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                if "${" not in path:
                    outputs.add(path)
    return tuple(sorted(o.rstrip("/") for o in outputs))


@functools.cache
def tracked(root: Path = ROOT) -> frozenset[str]:
    """The files Git tracks, and their folders (what a clean clone has); the disk where this is no Git checkout."""
    try:
        files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    folders = {"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)}
    return frozenset(files) | frozenset(folders)


def _pattern(path: str) -> list[re.Pattern[str]]:
    """One regex per component: `<stage>` and `*` stand for any name."""
    return [re.compile(re.sub(r"\\\*|<[^>]*>", "[^/]*", re.escape(part))) for part in path.split("/")]


def _matches(parts: list[re.Pattern[str]], path: str) -> bool:
    names = path.split("/")
    return len(names) == len(parts) and all(p.fullmatch(n) for p, n in zip(parts, names))


def path_exists(path: str, root: Path = ROOT) -> bool:
    """Source paths on the disk; under models/ and metrics/, what Git tracks or the pipeline declares (a clean
    clone has no DVC outputs, and a working copy may hold stale ones)."""
    path = path.rstrip("/")
    if not path.startswith(OUTPUT_TREES):
        return any(root.glob(re.sub(r"<[^>]*>", "*", path)))
    parts = _pattern(path)
    if any(_matches(parts, f) for f in tracked(root)):
        return True
    for output in declared_outputs(root):
        depth = output.count("/") + 1
        # the output itself, a file under an output folder, or a folder that holds outputs
        if _matches(parts[:depth], output) and (len(parts) == depth or not Path(output).suffix):
            return True
        if len(parts) < depth and _matches(parts, "/".join(output.split("/")[: len(parts)])):
            return True
    return False


def path_problems(text: str, root: Path = ROOT) -> list[str]:
    problems = []
    for snippet in snippets(text):
        for token in snippet.split():
            token = re.sub(r"'s$", "", token.strip('()[]{},;"`')).strip("'").split("::")[0].rstrip(".:")
            if token.startswith(TOP) and not path_exists(token, root):
                problems.append(f"`{token}`: no such file in the repository (nor a pipeline output)")
    return problems


# ---- (d) relative links and their anchors ----


def slugs(text: str) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to '-', repeats numbered."""
    _, prose = split_code(text)
    seen: dict[str, int] = {}
    for line in prose.splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            if seen[slug]:
                seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def link_problems(text: str, where: Path, root: Path = ROOT) -> list[str]:
    """`where`: the document's place in the repository, which its relative links start from."""
    _, prose = split_code(text)
    prose = re.sub(r"(`+).+?\1", "", prose)
    problems = []
    for m in LINK.finditer(prose):
        target = m.group(1)
        if re.match(r"[a-z][\w+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (where.parent / file).resolve() if file else where.resolve()
        if not path.is_relative_to(root.resolve()) or not path.exists():
            problems.append(f"[{target}]: no file {file}")
        elif anchor and path.suffix == ".md":
            headings = slugs(text if path == where.resolve() else path.read_text())
            if anchor not in headings:
                problems.append(f"[{target}]: {path.name} has no heading #{anchor}")
    return problems


def problems(text: str, where: Path) -> list[str]:
    return param_problems(text) + command_problems(text) + path_problems(text) + link_problems(text, where)


# ---- the documents as they are ----


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_param_command_path_and_link_a_document_shows_exists(doc):
    assert problems(doc.read_text(), doc) == []


def test_the_docs_are_there_and_the_readme_links_each_page():
    readme = (ROOT / "README.md").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert len(pages) >= 8
    assert [p for p in pages if f"](docs/{p}" not in readme] == []


# ---- each check fails on a planted defect ----

PLANTED = [
    ("a misspelt param", "dvc exp run -S quantize.calibration_methd=entropy", "no param quantize.calibration_methd"),
    ("a misspelt param, quoted", "`dvc exp run -S 'benchmark.batch_size=[1,8]'`", "no param benchmark.batch_size"),
    (
        "a misspelt param, no space",
        "`dvc exp run -Sbenchmark.profiles.default.concurency_search=false`",
        "no param benchmark.profiles.default.concurency_search",
    ),
    ("a missing target", "`dvc exp run -S target=a10`", "conf/target/ has no a10.yaml"),
    ("a misspelt flag", "`crossdeploy deploy --p99ms 30`", "crossdeploy deploy --p99ms: no such option"),
    (
        "a flag of another command",
        "```bash\ncrossdeploy serve --max-model-mb 10   # the size cap\n```",
        "crossdeploy serve --max-model-mb: no such option",
    ),
    ("a missing command", "`crossdeploy decide --p99-ms 30`", "crossdeploy decide: no such command"),
    ("a missing module", "`python -m crossdeploy.supportmatrix run`", "python -m crossdeploy.supportmatrix: no such module"),
    ("a missing file", "the quantizer is `crossdeploy/onnx_quantise.py`", "`crossdeploy/onnx_quantise.py`: no such file"),
    ("a missing test", "```\npython -m pytest tests/test_flor.py\n```", "`tests/test_flor.py`: no such file"),
    ("an output no stage writes", "`models/onnx/model.int4.onnx`", "`models/onnx/model.int4.onnx`: no such file"),
    ("a broken link", "see [the GPU page](gpus.md)", "[gpus.md]: no file gpus.md"),
    ("a broken anchor", "see [serving](serving.md#the-limits)", "[serving.md#the-limits]: serving.md has no heading #the-limits"),
    ("a broken anchor in the page itself", "see [below](#nowhere)", "[#nowhere]: pipeline.md has no heading #nowhere"),
]


@pytest.mark.parametrize("planted, expected", [(p, e) for _, p, e in PLANTED], ids=[n for n, _, _ in PLANTED])
def test_a_planted_defect_in_a_copy_of_a_doc_is_caught(tmp_path, planted, expected):
    doc = ROOT / "docs" / "pipeline.md"
    copy = tmp_path / "pipeline.md"
    copy.write_text(doc.read_text() + "\n" + planted + "\n")
    assert problems(doc.read_text(), doc) == []  # the doc as it is passes
    found = problems(copy.read_text(), doc)  # its links resolve from where the doc lives
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize("fine", [
    "dvc exp run -S quantize.calibration_method=entropy",
    "dvc exp run --queue -S 'quantize.calibration_method=minmax,entropy,percentile' -S validate.strict=false",
    "`dvc exp run -S target=h100` and `-S model=resnet18-tiny` and `-S model.arch=<name>`",
    "`dvc exp run -S benchmark.profiles.default.concurrency_search=false`",
    "`crossdeploy serve --bundle models/deploy`, `crossdeploy deploy --p99-ms 30 --json`",
    "`metrics/resources/<stage>.json`, `models/tensorrt/<variant>.json`, `models/serving/kserve/*.yaml`, `models/onnx/`",
    "[the layout](layout.md#repository-layout), [the README](../README.md)",
])  # fmt: skip
def test_what_exists_is_not_flagged(fine):
    assert problems(fine, ROOT / "docs" / "pipeline.md") == []


# ---- the README's first screen, the pipeline picture, the layout tree ----


def test_the_readme_is_short_and_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 250
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]  # CI runs the README's test command, word for word
    assert ci == 'pip install -e ".[cpu,test]" && python -m pytest'
    screen = "\n".join(readme[:40])
    assert 'pip install -e ".[cpu]" && dvc repro ' in screen and ci + " " in screen


def _reachable(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The transitive closure: every (a, c) with a path from a to c."""
    reach = set(edges)
    for k in {n for e in edges for n in e}:
        reach |= {(a, c) for a, b in reach if b == k for b2, c in reach if b2 == k}
    return reach


def dvc_edges(root: Path = ROOT) -> set[tuple[str, str]]:
    """stage A -> stage B where B depends on something A writes, as dvc.yaml says (what `dvc dag` draws)."""
    paths = yaml.safe_load((root / "params.yaml").read_text())["paths"]

    def resolve(entry) -> str:
        path = next(iter(entry)) if isinstance(entry, dict) else entry
        return re.sub(r"\$\{paths\.([\w.]+)\}", lambda m: functools.reduce(lambda d, k: d[k], m.group(1).split("."), paths), path)

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    outs = {name: [resolve(o) for kind in ("outs", "metrics", "plots") for o in s.get(kind, [])] for name, s in stages.items()}
    edges = set()
    for name, stage in stages.items():
        for dep in map(resolve, stage.get("deps", [])):
            for other, written in outs.items():
                if other != name and any(dep == o or dep.startswith(o + "/") or o.startswith(dep + "/") for o in written):
                    edges.add((other, name))
    return edges


def test_the_readmes_pipeline_picture_has_dvc_yamls_stages_and_order():
    readme = (ROOT / "README.md").read_text()
    chart = readme.split("```mermaid", 1)[1].split("```", 1)[0]
    drawn = {(a, b) for a, b in re.findall(r"\b(\w+)\s*-->\s*(\w+)", chart)}
    real = dvc_edges()
    assert {n for e in drawn for n in e} == set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    # the picture leaves out edges others imply; what reaches what is dvc.yaml's, no more, no less
    assert _reachable(drawn) == _reachable(real)
    assert drawn <= real


def layout_entries(text: str) -> set[str]:
    """The paths a layout tree lists: `  name   comment`, two spaces of indent per folder level."""
    tree = text.split("```", 2)[1].split("\n", 1)[1]
    stack: list[str] = []
    entries = set()
    for line in tree.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        stack = stack[:depth] + [name.rstrip("/")]
        entries.add("/".join(stack) + ("/" if name.endswith("/") else ""))
    return entries


def test_the_layout_page_lists_every_module_and_nothing_that_is_gone():
    entries = layout_entries((ROOT / "docs" / "layout.md").read_text())
    package = ROOT / "crossdeploy"
    modules = {str(p.relative_to(ROOT)) for p in package.rglob("*.py") if p.name != "__init__.py"}
    folders = {str(p.relative_to(ROOT)) + "/" for p in package.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert sorted((modules | folders) - entries) == []
    assert sorted(e for e in entries if not (ROOT / e).exists()) == []


def test_the_readmes_short_tree_names_the_top_level():
    readme = (ROOT / "README.md").read_text()
    tree = readme.split("## Repository layout", 1)[1]
    entries = layout_entries(tree)
    for name in (
        "dvc.yaml",
        "params.yaml",
        "stages/",
        "models/",
        "metrics/",
        "tests/",
        "pyproject.toml",
        "README.md",
        "docs/",
        "conf/",
        "crossdeploy/",
    ):
        assert name in entries
    assert sorted(e for e in entries if not (ROOT / e).exists()) == []


def test_the_sweeps_publish_into_the_page_that_holds_their_markers():
    from crossdeploy.experiments import cost_growth, support_matrix

    for sweep in (support_matrix.SWEEP, cost_growth.SWEEP):
        page = (ROOT / sweep.readme).read_text()
        assert page.count(sweep.markers[0]) == 1 and page.count(sweep.markers[1]) == 1
        assert page.index(sweep.markers[0]) < page.index(sweep.markers[1])
