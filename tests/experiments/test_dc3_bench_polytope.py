"""constrain bench polytope: a small run in which every contender projects onto the same polytope as
cvxpy does, and the report of contenders that are not installed."""

from __future__ import annotations

import json

import pytest

from experiments import bench_polytope as bp
from experiments.cli import main as cli_main


def test_every_installed_contender_agrees_with_cvxpy(tmp_path, capsys):
    pytest.importorskip("qpth", reason="qpth is an optional bench dependency")
    pytest.importorskip("cvxpylayers", reason="cvxpylayers is an optional bench dependency")
    path = tmp_path / "bench.json"
    assert (
        cli_main(
            ["bench", "polytope", "--batch", "6", "--repeats", "1", "--check-rows", "3", "--eps", "1e-8", "--json", str(path)]
        )
        == 0
    )
    result = json.loads(path.read_text())
    assert [r["method"] for r in result["rows"]] == ["ours", "qpth", "cvxpylayers"]
    by = {r["method"]: r for r in result["rows"]}
    assert by["ours"]["error"] <= 1e-9 and by["ours"]["violation"] <= 1e-9
    for name in ("qpth", "cvxpylayers"):
        assert by[name]["error"] <= 1e-4, name  # a solver at its tolerance, not a different answer
    assert by["ours"]["ratio_to_ours"] == 1.0
    assert "| ours |" in capsys.readouterr().out


def test_missing_contenders_are_reported_not_fatal(monkeypatch):
    def missing(P, eps):
        raise ImportError("no", name="qpth")

    monkeypatch.setattr(bp, "_qpth", missing)
    monkeypatch.setattr(bp, "_cvxpylayers", missing)
    result = bp.run_bench(batch=4, repeats=1, check_rows=2)
    assert [r["method"] for r in result["rows"]] == ["ours"]
    assert set(result["missing"]) == {"qpth", "cvxpylayers"}
    text = bp.format_table(result)
    assert "not installed (qpth); pip install constrain[bench]" in text


def test_bad_options(tmp_path, capsys):
    assert cli_main(["bench", "polytope", "--batch", "0"]) == 2
    assert "--batch must be >= 1" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli_main(["bench", "polytope", "--json", str(tmp_path / "file" / "x.json")]) == 2
    assert "--json" in capsys.readouterr().err  # checked before any work: the bench never ran
