"""`constrain study` is reproducible and loses nothing when killed.

- Same seed, same results, whatever the worker count: a run killed and resumed in one process gives
  the same result files and table as an uninterrupted run in two worker processes. The files hold
  timing fields (``time_per_step``, ``wall_per_step``, ``train_time``, ``train_cpu``, ``wall_time``
  and the ``time`` / ``cpu`` columns of the log); everything else is compared, and the tables
  without their time/step column.
  This is the check that spawned workers compute what this process computes (the reference runs in
  two workers, the killed and resumed study in one process).
- SIGKILL in the middle (the whole process group, workers included) and re-running resumes:
  finished runs are kept untouched, every result file is complete JSON, no temporary file is left,
  and the final table equals an uninterrupted run's.

The default run uses a reduced study (two problems, short budgets); ``-m slow`` runs the full
``constrain study --quick`` twice through the console script. The studies that are killed or interrupted
are forked from this already-imported process (:class:`_Forked`: the command's process in a session of its
own, its workers spawned interpreters as under the console script), which spares a new interpreter's
imports; one interrupt test (``study l1``) starts the console script itself, end to end.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import cli
from experiments.problems import get_problem
from experiments.study import read_run, warm_up

ROOT = Path(__file__).resolve().parents[2]
TIMING = {"time_per_step", "wall_per_step", "train_time", "train_cpu", "wall_time"}
TIMING_LOG = {"time", "cpu"}
#: The reduced study: every strategy on an output constraint and on a weight constraint (the pool and this process
#: must write the same records for both kinds of target), short budgets.
REDUCED = ["--problems", "lin-output-l1,lin-weight-nonneg", "--steps", "60"]


def _console() -> list[str]:
    """The console script (``python -m experiments.cli`` where it is not installed)."""
    script = shutil.which("constrain")
    return [script] if script else [sys.executable, "-m", "experiments.cli"]


def _study(out: Path, *extra: str, workers: int = 1) -> list[str]:
    """The arguments of ``constrain study --quick`` into ``out`` (without the program name)."""
    return ["study", "--quick", "--no-progress", "--no-figures", "--out", str(out), "--workers", str(workers), *extra]


def _command(out: Path, *extra: str, workers: int = 1) -> list[str]:
    return [*_console(), *_study(out, *extra, workers=workers)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _run(out: Path, *extra: str, workers: int = 1) -> str:
    done = subprocess.run(
        _command(out, *extra, workers=workers), capture_output=True, text=True, cwd=out.parent, env=_env(), timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _run_here(out: Path, *extra: str, workers: int = 1) -> str:
    """The same command as :func:`_run`, in this process (``experiments.cli.main``): what a re-run or a
    reference needs, without the seconds a new interpreter spends importing torch and cvxpy."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(_study(out, *extra, workers=workers))
    assert status == 0, printed.getvalue()[-3000:]
    return printed.getvalue()


def _forked_main(argv: list[str], cwd: Path, stderr_fd: int) -> None:
    """The forked child of :class:`_Forked`: a console script's process once it has imported everything."""
    os.setsid()  # a process group of its own, as start_new_session gives the console script
    os.chdir(cwd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(stderr_fd, 2)
    os.close(devnull)
    os.close(stderr_fd)
    sys.stdout = open(1, "w", closefd=False)  # the process's own streams, open until its exit
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what a new interpreter in a terminal has
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)  # no OpenMP region after the fork (a pool the parent used does not survive it)
    sys.exit(cli.main(argv))


class _Forked:
    """``constrain ARGV`` in a child forked from this warm process (torch, cvxpy and ours already imported: a
    new interpreter spends seconds of CPU on them), with the part of :class:`subprocess.Popen`'s interface these
    tests use: ``pid``, ``poll``, ``wait``, ``returncode`` (``-signal`` when killed by one), ``stderr`` (text).

    The child (:func:`_forked_main`) is the console script's process after its imports: a session of its own,
    Python's Ctrl-C handler, SIGTERM's default action, stdout to /dev/null and stderr to a pipe; it runs
    ``sys.exit(experiments.cli.main(argv))`` under multiprocessing's fork start method, whose bootstrap ends it as
    an interpreter ends (multiprocessing's exit function: finalizers, its children joined) with that status. The
    study's workers are spawned interpreters, as under the console script. ``_start_console`` runs the script."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.args = argv
        read, write = os.pipe()
        self._process = multiprocessing.get_context("fork").Process(target=_forked_main, args=(argv, cwd, write))
        self._process.start()
        os.close(write)
        assert self._process.pid is not None
        self.pid: int = self._process.pid
        self.stderr = open(read)  # closed by the tests, as Popen's stderr

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self._process.exitcode


def _start(argv: list[str], cwd: Path) -> _Forked:
    """:class:`_Forked` after the one-time costs this process pays for its own studies anyway, so that the child
    inherits them instead of paying them again: a first optimizer step (:func:`experiments.study.warm_up`) and the
    cvxpy optimum of each problem named in ``argv`` (kept per process by ``get_problem``)."""
    warm_up()
    if "--problems" in argv:
        for name in argv[argv.index("--problems") + 1].split(","):
            assert get_problem(name).f_star is not None
    return _Forked(argv, cwd)


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
    """The reference: the reduced study, uninterrupted, in two worker processes."""
    out = tmp_path_factory.mktemp("study") / "first"
    return out, _run_here(out, *REDUCED, workers=2)


def test_sigkill_in_the_middle_then_resume_keeps_finished_runs_and_gives_the_same_table(uninterrupted, tmp_path) -> None:
    """Killed and resumed in this process (one worker), the study ends with the result files and table of the
    uninterrupted run in two worker processes: nothing lost, and the same numbers whatever the worker count."""
    reference, reference_stdout = uninterrupted
    total = len(list(reference.rglob("*.json")))
    assert total > 10
    out = tmp_path / "killed"
    process = _start(_study(out, *REDUCED), tmp_path)
    deadline = time.monotonic() + 600
    try:
        while len(list(out.rglob("*.json"))) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the study finished before it could be killed: " + process.stderr.read()[-2000:]
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

    missing = sorted(
        {str(p.relative_to(reference)) for p in reference.rglob("*.json")} - {str(p.relative_to(out)) for p in finished}
    )
    stale = out / Path(missing[0]).parent / f".{Path(missing[0]).name}.k1ll3d.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text('{"status": "do')  # what a kill during write_json_atomic leaves behind

    resumed_stdout = _run_here(out, *REDUCED)  # the same command, run again (here: in this process)
    for path, (mtime, data) in finished.items():  # kept, not redone
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data, f"{path} was rewritten"
    left = [p for p in out.rglob("*") if p.is_file() and p.suffix not in (".json", ".ref")]  # runs; F* in references/
    assert not left, "a temporary file was left"
    assert not stale.exists()
    resumed, uninterrupted_results = _results(out), _results(reference)
    assert resumed.keys() == uninterrupted_results.keys()
    for name in resumed:
        assert resumed[name] == uninterrupted_results[name], f"{name} differs from the uninterrupted run"
    assert _table(resumed_stdout) == _table(reference_stdout)


@pytest.mark.slow
def test_constrain_study_quick_twice_gives_identical_result_files(tmp_path) -> None:
    first_stdout, second_stdout = _run(tmp_path / "a", workers=2), _run(tmp_path / "b", workers=2)
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b")
    assert a.keys() == b.keys() and a == b
    assert _table(first_stdout) == _table(second_stdout)


# ====================================================================== interrupts (real signals)
#: Seconds from the signal to the exit that the CLI promises on an idle machine (it takes well under one).
STOP_WITHIN = 2.0


def _stop_within() -> float:
    """:data:`STOP_WITHIN`, stretched by the load per core now: on a loaded machine (other test workers, other
    jobs) a process gets a fraction of a core, and the exit is a few hundred milliseconds of CPU work. A hang
    (what these tests catch: a cleanup waiting for the workers' runs, or for a signal already lost) lasts far
    longer than that whatever the load."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return STOP_WITHIN * max(1.0, load / (os.cpu_count() or 1))


#: A reduced study with runs long enough to interrupt in the middle: the slowest strategies per step (and the
#: baseline, always run), 6 runs, so that the resume after an interrupt has few runs left to do.
INTERRUPTIBLE = [
    "--problems",
    "lin-output-l1",
    "--steps",
    "300",
    "--strategies",
    "slack-lagrangian,projected,reparam-sigmoid-simplex",
]


def _group(pgid: int) -> list[tuple[int, int, str]]:
    """``(pid, parent pid, state)`` of every process in process group ``pgid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            found.append((int(stat.parent.name), int(fields[1]), fields[0]))
    return found


def _running(pgid: int) -> list[int]:
    """Processes of the group that still run (zombies have exited; only their parent may reap them)."""
    return [pid for pid, _, state in _group(pgid) if state != "Z"]


def _as_a_terminal_job() -> None:
    """Start the child with Ctrl-C's default disposition, as a shell's foreground job has it: a test
    run itself started in the background (``cmd &``) ignores SIGINT, and its children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_console(argv: list[str], cwd: Path) -> subprocess.Popen:
    """``constrain ARGV`` through the console script, a new interpreter in a session of its own."""
    return subprocess.Popen(
        [*_console(), *argv],
        cwd=cwd,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_a_terminal_job,
    )


def _wait_until(process: subprocess.Popen | _Forked, ready, what: str, limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        assert process.poll() is None, f"the command ended before {what}: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} after {limit} s"
        time.sleep(0.02)


def _is_worker(pid: int) -> bool:
    """A pool worker (a spawned ``spawn_main`` child), not multiprocessing's resource tracker."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _workers(process: subprocess.Popen | _Forked) -> list[int]:
    return [pid for pid, parent, _ in _group(process.pid) if parent == process.pid and _is_worker(pid)]


def _workers_started(process: subprocess.Popen | _Forked, count: int = 2):
    return lambda: len(_workers(process)) >= count


def _has_torch(pid: int) -> bool:
    """Whether process ``pid`` has loaded torch's library (it got past its imports, into its tasks)."""
    try:
        return b"libtorch_cpu" in Path(f"/proc/{pid}/maps").read_bytes()
    except OSError:
        return False


def _workers_in_their_tasks(process: subprocess.Popen | _Forked, count: int = 2):
    """Ready when ``count`` workers have imported torch: they unpickled a task and run it."""
    return lambda: sum(1 for pid in _workers(process) if _has_torch(pid)) >= count


def _stop(process: subprocess.Popen | _Forked, signum: int, whole_group: bool = True) -> tuple[float, str]:
    """Send ``signum`` (to the whole group, as a terminal does, or to the main process only); returns the
    seconds until the process exited and its stderr. Kills the group if it did not exit."""
    (os.killpg if whole_group else os.kill)(process.pid, signum)
    tic = time.monotonic()
    try:
        process.wait(timeout=60)
    finally:
        seconds = time.monotonic() - tic
        if process.returncode is None or _running(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    err = process.stderr.read()
    process.stderr.close()
    return seconds, err


def _assert_one_line(err: str, status: int, returncode: int, seconds: float, pgid: int) -> None:
    assert returncode == status, err[-3000:]
    assert seconds < _stop_within(), f"exited {seconds:.2f} s after the signal"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-3000:]
    assert "interrupted" in err
    _assert_group_ended(pgid)


def _assert_group_ended(pgid: int, grace: float = 1.0) -> None:
    """Nothing of the group runs on: allow ``grace`` seconds for multiprocessing's resource tracker,
    which exits when it sees the main process's end of its pipe close (a worker left running would
    still run: it has a whole run to finish)."""
    deadline = time.monotonic() + grace
    while _running(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {pid: _cmdline(pid) for pid in _running(pgid)}
    assert not left, f"still running after the exit: {left}"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_ctrl_c_stops_the_workers_at_once_and_resume_keeps_every_finished_run(tmp_path) -> None:
    out = tmp_path / "interrupted"
    process = _start(_study(out, *INTERRUPTIBLE, workers=2), tmp_path)
    _wait_until(process, lambda: len(list(out.rglob("*.json"))) >= 2, "two finished runs")
    seconds, err = _stop(process, signal.SIGINT)
    _assert_one_line(err, 130, process.returncode, seconds, process.pid)
    assert f"finished runs are kept in {out}" in err

    finished = {path: path.read_bytes() for path in out.rglob("*.json")}
    assert finished and all(read_run(path) is not None for path in finished)  # whole records only
    stdout = _run_here(out, *INTERRUPTIBLE)  # the same command resumes (here: in this process, one worker)
    for path, data in finished.items():
        assert path.read_bytes() == data, f"{path} was redone"
    total = int(stdout.split(" runs (")[0].rsplit("\n", 1)[-1])
    assert len(list(out.rglob("*.json"))) == total > len(finished)
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix not in (".json", ".ref")]  # runs, F* (references/)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_ctrl_c_while_the_workers_start_prints_no_worker_traceback(tmp_path) -> None:
    """The first seconds of ``constrain study --quick``: the workers are still importing torch."""
    process = _start(_study(tmp_path / "out", workers=2), tmp_path)
    _wait_until(process, _workers_started(process), "worker processes")
    seconds, err = _stop(process, signal.SIGINT)
    _assert_one_line(err, 130, process.returncode, seconds, process.pid)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_sigterm_to_the_main_process_alone_stops_the_workers_too(tmp_path) -> None:
    out = tmp_path / "out"
    process = _start(_study(out, *INTERRUPTIBLE, workers=2), tmp_path)
    _wait_until(process, lambda: len(list(out.rglob("*.json"))) >= 1, "a finished run")
    seconds, err = _stop(process, signal.SIGTERM, whole_group=False)  # `kill PID`: the workers get nothing
    _assert_one_line(err, 128 + signal.SIGTERM, process.returncode, seconds, process.pid)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_ctrl_c_stops_the_other_studies_worker_pools(tmp_path) -> None:
    """``constrain study l1``: a study that calls ``run_tasks`` itself (``study psilon`` takes the same path, with
    nothing of its own around it: one of the two is enough)."""
    argv = ["study", "l1", "--datasets", "iris", "wine", "--steps", "2000", "--seeds", "2"]
    process = _start_console([*argv, "--workers", "2", "--no-progress", "--out", str(tmp_path / "out")], tmp_path)
    _wait_until(process, _workers_in_their_tasks(process), "workers in their runs")
    seconds, err = _stop(process, signal.SIGINT)
    _assert_one_line(err, 130, process.returncode, seconds, process.pid)
    assert not (tmp_path / "figures").exists()


SLOW_CLEANUP = """
import sys, time
from experiments._runner import WorkerPool, handle_interrupts

def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass

if __name__ == "__main__":
    with handle_interrupts():
        pool = WorkerPool(2)
        try:
            print("ready", flush=True)  # inside the try: a Ctrl-C sent once this line is read lands in it
            for _ in pool.imap_unordered(spin, [(60,), (60,)]):
                pass
        except KeyboardInterrupt:
            print("first", flush=True)
            time.sleep(60)  # a cleanup that hangs, as concurrent.futures did at exit
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_a_second_ctrl_c_exits_at_once_even_when_cleanup_hangs(tmp_path) -> None:
    script = tmp_path / "slow_cleanup.py"
    script.write_text(SLOW_CLEANUP)
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_a_terminal_job,
    )
    assert process.stdout.readline() == "ready\n"  # the pool is up
    _wait_until(process, _workers_started(process), "worker processes")
    os.kill(process.pid, signal.SIGINT)  # the main process only: the workers stay busy
    assert process.stdout.readline() == "first\n"
    running = _running(process.pid)  # the main process, in its hanging cleanup, and its busy workers
    assert process.pid in running and _workers_started(process)()
    seconds, err = _stop(process, signal.SIGINT, whole_group=False)
    process.stdout.close()
    assert process.returncode == 130 and seconds < _stop_within() and "Traceback" not in err, err
    _assert_group_ended(process.pid)  # the workers were killed before the exit
