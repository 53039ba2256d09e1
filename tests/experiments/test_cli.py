"""The ``constrain`` command line as a user meets it: where runs write, paths checked before any
work, the short ``constrain bench``, close-match suggestions, and help for every option.

(Interrupts, with real signals on real process groups: ``test_study_reliability.py``.)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import experiments.cli as cli
import strategies
from constrain import NonNegative, on_output, on_parameter
from experiments import _bench_default, study


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a ``figures/`` of "full-run" files, as in a clone of the repository."""
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("study.md", "l1.md", "psilon.md", "study-pareto.png"):
        (figures / name).write_text("the full run's file\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


QUICK_RUNS = {
    "study": (
        ["study", "--quick", "--problems", "lin-output-l1", "--strategies", "projected", "--steps", "15"],
        ["study.md", "study-lin-output-l1.png"],
    ),
    "l1": (
        ["study", "l1", "--quick", "--datasets", "iris", "--methods", "none", "l1-proximal", "--steps", "30"],
        ["l1.md", "l1_sparsity.png"],
    ),
    "psilon": (
        # one outer fold of three (the deep ablation included): where files go does not depend on the fold count
        ["study", "psilon", "--quick", "--datasets", "iris", "--models", "mlp", "psilon", "--steps", "10", "--run-folds", "0"],
        ["psilon.md", "psilon_metric.png"],
    ),
}


@pytest.mark.parametrize("name", QUICK_RUNS)
def test_a_quick_run_never_writes_into_figures(clone: Path, name: str) -> None:
    argv, written = QUICK_RUNS[name]
    before = _snapshot(clone / "figures")
    assert cli.main([*argv, "--out", "res", "--workers", "1", "--no-progress"]) == 0
    assert _snapshot(clone / "figures") == before  # nothing added, nothing rewritten
    for file in written:
        assert (clone / "res" / "figures" / file).stat().st_size > 100  # under --out instead
    assert cli.main([*argv, "--out", "res", "--figures", "mine", "--workers", "1", "--no-progress"]) == 0
    assert all((clone / "mine" / file).is_file() for file in written)  # --figures is honoured
    assert _snapshot(clone / "figures") == before


@pytest.mark.parametrize(
    "options, expected",
    [
        ([], "figures"),  # the documented full run writes the README's figures
        (["--quick"], "res/figures"),
        (["--steps", "50"], "res/figures"),
        (["--seeds", "5"], "res/figures"),
        (["--problems", "lin-weight-l1"], "res/figures"),
        (["--strategies", "projected"], "res/figures"),
        (["--quick", "--figures", "elsewhere"], "elsewhere"),
    ],
)
def test_only_the_full_study_writes_figures(clone: Path, monkeypatch: pytest.MonkeyPatch, options, expected) -> None:
    calls: list[dict] = []

    def fake_run_study(problems, **kwargs):  # records where the command sends the figures
        calls.append(kwargs)
        return SimpleNamespace(table="", plan=SimpleNamespace(specs=[], skipped=[]))

    monkeypatch.setattr(study, "run_study", fake_run_study)
    assert cli.main(["study", *options, "--out", "res", "--no-progress"]) == 0
    assert calls[0]["figures"] == Path(expected) and calls[0]["out"] == Path("res")


def _count_runs(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    real = study.train_run
    monkeypatch.setattr(study, "train_run", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["study", "--quick", "--figures", "/proc/constrain/figures"], "--figures"),
        (["study", "--quick", "--out", "/proc/constrain/results"], "--out"),
        (["study", "l1", "--quick", "--figures", "/proc/constrain/figures"], "--figures"),
        (["study", "psilon", "--quick", "--out", "/proc/constrain/results"], "--out"),
        (["bench", "projections", "--json", "/proc/constrain/bench.json"], "--json"),
        (["bench", "strategies", "--json", "/proc/constrain/bench.json"], "--json"),
    ],
)
def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch, capsys, argv, flag) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc (Linux) for a folder that cannot be created")
    monkeypatch.chdir(tmp_path)
    calls = _count_runs(monkeypatch)
    assert cli.main([*argv, "--no-progress"] if argv[0] == "study" else argv) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and f"error: {flag} /proc/constrain/" in message, message
    assert calls == [] and not list(tmp_path.rglob("*.json"))  # no run started


def test_a_file_where_a_folder_belongs_is_named(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("")
    assert cli.main(["study", "l1", "--quick", "--out", "taken", "--no-progress"]) == 2
    assert "--out taken: cannot write there (it is a file, not a folder)" in capsys.readouterr().err
    assert cli.main(["bench", "projections", "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path}: it is a folder" in capsys.readouterr().err


def test_a_misspelt_strategy_gets_the_close_match(tmp_path, capsys) -> None:
    argv = ["study", "--quick", "--strategies", "projcted", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no strategy entry matches projcted; labels: " in err and err.rstrip().endswith("Did you mean 'projected'?")


def test_bench_without_a_benchmark_runs_a_short_run_of_both(monkeypatch, capsys) -> None:
    parser = cli.build_parser()
    for argv in _bench_default.SHORT_RUNS:  # the real short default parses, and names each benchmark
        assert parser.parse_args(["bench", *argv]).bench_command == argv[0]
    tiny = (
        ("projections", "--sizes", "16", "--repeats", "1", "--cvxpy-rows", "0", "--sets", "l1ball"),
        (
            "strategies",
            "--rounds",
            "1",
            "--steps",
            "1",
            "--width",
            "8",
            "--batch",
            "8",
            "--cooper-steps",
            "0",
            "--only",
            "projected",
        ),
    )
    monkeypatch.setattr(_bench_default, "SHORT_RUNS", tiny)
    assert cli.main(["bench"]) == 0
    out = capsys.readouterr().out
    assert out.count("== constrain bench ") == 2
    assert "l1ball" in out and "projected" in out  # each benchmark printed its table


def test_report_never_prints_negative_zero() -> None:
    model = torch.nn.Linear(3, 2)
    strategy = strategies.get("projected")
    strategy.attach(model, [on_output(NonNegative()), on_parameter("weight", NonNegative())])
    report = strategy.report(model(torch.randn(5, 3)))
    assert list(report.values()) == [0.0, 0.0]
    assert all(math.copysign(1.0, v) == 1.0 for v in report.values()) and "-0.0" not in str(report)


def _parsers(parser: argparse.ArgumentParser, prog: str = "constrain"):
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prog} {name}")


def test_every_command_and_option_has_help(capsys) -> None:
    top = cli.build_parser()
    seen = []
    for prog, parser in _parsers(top):
        seen.append(prog)
        assert parser.description, f"{prog} has no description"
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help and action.help != argparse.SUPPRESS, f"{prog} {action.option_strings} has no help"
        with pytest.raises(SystemExit) as done:
            parser.parse_args(["--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: {prog}") and "\n\n" in text
    assert {"constrain study", "constrain study l1", "constrain bench", "constrain bench strategies"} <= set(seen)
