"""`constrain study` is reproducible and loses nothing when killed.

- Same seed, same results: two runs give identical result files on the CPU. The files hold timing
  fields (``time_per_step``, ``wall_per_step``, ``train_time``, ``train_cpu``, ``wall_time`` and the
  ``time`` / ``cpu`` columns of the log); everything else is compared, and the tables without their
  time/step column.
- SIGKILL in the middle (the whole process group, workers included) and re-running resumes:
  finished runs are kept untouched, every result file is complete JSON, no temporary file is left,
  and the final table equals an uninterrupted run's.

The default run uses a reduced study (two problems, short budgets) through the console script;
``-m slow`` runs the full ``constrain study --quick`` twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.study import read_run

ROOT = Path(__file__).resolve().parents[2]
TIMING = {"time_per_step", "wall_per_step", "train_time", "train_cpu", "wall_time"}
TIMING_LOG = {"time", "cpu"}
REDUCED = ["--problems", "lin-output-l1", "--steps", "60"]


def _command(out: Path, *extra: str, workers: int = 1) -> list[str]:
    script = shutil.which("constrain")
    head = [script] if script else [sys.executable, "-m", "experiments.cli"]
    return [*head, "study", "--quick", "--no-progress", "--no-figures", "--out", str(out), "--workers", str(workers),
            *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _run(out: Path, *extra: str, workers: int = 1) -> str:
    done = subprocess.run(_command(out, *extra, workers=workers), capture_output=True, text=True, cwd=out.parent,
                          env=_env(), timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _results(out: Path) -> dict[str, dict]:
    """Every result file, relative path -> record without its timing fields."""
    records = {}
    for path in sorted(out.rglob("*.json")):
        record = json.loads(path.read_text())
        for key in TIMING:
            record.pop(key)
        for key in TIMING_LOG:
            record["log"].pop(key)
        record.pop("traceback", None)  # a failed run's traceback holds file paths only; compared via "error"
        records[str(path.relative_to(out))] = record
    return records


def _table(stdout: str) -> list[str]:
    """The printed table without the time/step column (the last) and without the closing summary line."""
    lines = [line for line in stdout.splitlines() if not line.endswith("s; results in " + line.split("results in ")[-1])]
    table = []
    for line in lines:
        if line.startswith("|") and "time/step" not in line:
            line = "|".join(line.split("|")[:-2]) + "|"
        table.append(line)
    return [line for line in table if " runs (" not in line]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("study") / "first"
    return out, _run(out, *REDUCED)


def test_two_runs_give_identical_result_files_and_tables(uninterrupted, tmp_path) -> None:
    first, first_stdout = uninterrupted
    second = tmp_path / "second"
    second_stdout = _run(second, *REDUCED, workers=2)  # worker processes: the same numbers
    a, b = _results(first), _results(second)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert a[name] == b[name], f"{name} differs between the two runs"
    assert _table(first_stdout) == _table(second_stdout)


def test_sigkill_in_the_middle_then_resume_keeps_finished_runs_and_gives_the_same_table(uninterrupted, tmp_path) -> None:
    reference, reference_stdout = uninterrupted
    total = len(list(reference.rglob("*.json")))
    out = tmp_path / "killed"
    process = subprocess.Popen(_command(out, *REDUCED), cwd=tmp_path, env=_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    try:
        while len(list(out.rglob("*.json"))) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the study finished before it could be killed: " + process.stderr.read().decode()[-2000:]
        os.killpg(process.pid, signal.SIGKILL)  # the runner and any worker it started
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    finished = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in out.rglob("*.json")}
    assert 3 <= len(finished) < total
    for path in finished:  # complete files only: every one is a whole, readable record
        record = read_run(path)
        assert record is not None and record["status"] in ("done", "failed"), path

    missing = sorted({str(p.relative_to(reference)) for p in reference.rglob("*.json")}
                     - {str(p.relative_to(out)) for p in finished})
    stale = out / Path(missing[0]).parent / f".{Path(missing[0]).name}.k1ll3d.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text('{"status": "do')  # what a kill during write_json_atomic leaves behind

    resumed_stdout = _run(out, *REDUCED)
    for path, (mtime, data) in finished.items():  # kept, not redone
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data, f"{path} was rewritten"
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix != ".json"], "a temporary file was left"
    assert not stale.exists()
    assert _results(out) == _results(reference)
    assert _table(resumed_stdout) == _table(reference_stdout)


@pytest.mark.slow
def test_constrain_study_quick_twice_gives_identical_result_files(tmp_path) -> None:
    first_stdout, second_stdout = _run(tmp_path / "a", workers=2), _run(tmp_path / "b", workers=2)
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b")
    assert a.keys() == b.keys() and a == b
    assert _table(first_stdout) == _table(second_stdout)
