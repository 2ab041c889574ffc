"""The queued-experiment sweep the support matrix and the cost growth share: each architecture's files read
back from its experiment's Git ref, a missing one said with the reason, the table published. The refs are
made here by hand, as `dvc exp run` names them (refs/exps/<sha>/<name>); no experiment runs."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from crossdeploy.experiments.sweep import Sweep


def _git(repo, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch):
    _git(tmp_path, "init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "experiments.md").write_text("# r\n\n<!-- t:start -->\nold\n<!-- t:end -->\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    for name, parity in (("matrix-resnet18", {"torch-fp32": {"status": "ok"}}), ("matrix-vgg11", None)):
        shutil.rmtree(tmp_path / "metrics", ignore_errors=True)
        if parity is not None:
            (tmp_path / "metrics").mkdir(exist_ok=True)
            (tmp_path / "metrics" / "parity.json").write_text(json.dumps(parity))
        (tmp_path / "marker").write_text(name)  # every experiment commit differs
        _git(tmp_path, "add", "-A")
        _git(tmp_path, "commit", "-qm", name)
        _git(tmp_path, "update-ref", f"refs/exps/ab/cdef/{name}", "HEAD")
        _git(tmp_path, "reset", "-q", "--hard", "HEAD~1")  # the experiment's files stay on its ref alone
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_sweep_reads_each_experiments_file_and_says_why_one_has_none(repo):
    sweep = Sweep("matrix-", ("resnet18", "vgg11", "alexnet"), repo / "metrics" / "table", ("<!-- t:start -->", "<!-- t:end -->"))
    found = sweep.finished(["resnet18", "vgg11", "alexnet"], "metrics/parity.json", "validate")
    ref, status = found["resnet18"]
    assert status == "ok" and ref.endswith("/matrix-resnet18")
    # planted: an experiment whose commit lacks the file (it stopped before writing it), and one never run
    assert found["vgg11"] == (None, "experiment not run") and found["alexnet"] == (None, "experiment not run")


def test_a_sweep_tabulates_into_its_files_and_the_docs_page(repo, capsys):
    sweep = Sweep("matrix-", ("resnet18",), repo / "metrics" / "table", ("<!-- t:start -->", "<!-- t:end -->"))

    def collect(architectures):
        return {
            arch: {"pipeline": status} for arch, (_, status) in sweep.finished(architectures, "metrics/parity.json", "validate").items()
        }

    sweep.main(
        ["table"],
        collect,
        lambda result: f"| arch | pipeline |\n| resnet18 | {result['rows']['resnet18']['pipeline']} |\n",
        lambda result: {"extra": 1},
    )
    data = json.loads((repo / "metrics" / "table.json").read_text())
    assert data["rows"] == {"resnet18": {"pipeline": "ok"}} and data["extra"] == 1 and "cores" in data["machine"]
    page = (repo / "docs" / "experiments.md").read_text()  # Sweep.readme's default: the page with the markers
    assert "| resnet18 | ok |" in page and "old" not in page
    assert "| resnet18 | ok |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sweep.main(["tabulate"], collect, str)  # not a command
