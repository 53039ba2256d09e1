"""``experiments._runner``: results in task order, a task's exception as itself, a dead worker named.

(Its behaviour under real signals: ``test_study_reliability.py``.)
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments._runner import _LIVE, WorkerError, WorkerPool, run_tasks

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_task_order(workers: int) -> None:
    seen: list[int] = []
    results = run_tasks(pow, [(2, i) for i in range(7)], workers, on_result=lambda i, value: seen.append(i))
    assert results == [2**i for i in range(7)]
    assert sorted(seen) == list(range(7))


def test_a_task_exception_is_raised_as_itself_with_the_worker_traceback() -> None:
    with pytest.raises(ValueError, match="invalid literal") as caught:
        run_tasks(int, [("1",), ("x",), ("3",)], 2)
    assert isinstance(caught.value.__cause__, WorkerError) and "Traceback" in str(caught.value.__cause__)


def test_a_worker_that_dies_is_reported_with_its_exit_code() -> None:
    with pytest.raises(WorkerError, match=r"died \(exit code 3\)"):
        run_tasks(os._exit, [(3,), (3,)], 2)


def test_terminate_kills_every_worker_even_those_that_ignore_sigterm() -> None:
    pool = WorkerPool(3, initializer=functools.partial(signal.signal, signal.SIGTERM, signal.SIG_IGN))
    pids = {pid for _, pid in pool.imap_unordered(os.getpid, [(), (), ()])}  # one task each: all initialised
    processes = [process for process, _ in pool._workers]
    assert pids == {process.pid for process in processes}
    pool.terminate()
    assert not any(process.is_alive() for process in processes)
    assert not any(process in _LIVE for process in processes)


SPAWN_WINDOW = """
import os, signal
from experiments._runner import WorkerPool, _children_ignore_interrupts

if __name__ == "__main__":
    got = []
    signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    with _children_ignore_interrupts():
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C while the workers start
        pending_inside = list(got)
    pool = WorkerPool(2)
    ignored = []
    for process, _ in pool._workers:  # read at once: inherited at birth, not set later by the worker
        with open(f"/proc/{process.pid}/status") as status:
            mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
        ignored.append(bool(mask >> (signal.SIGINT - 1) & 1))
    pool.close()
    print(pending_inside, got, ignored, signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads signal dispositions from /proc (Linux)")
def test_workers_ignore_sigint_from_birth_and_a_ctrl_c_while_they_start_is_kept(tmp_path) -> None:
    """Spawned interpreters do not inherit a signal mask, only SIG_IGN: they ignore SIGINT before they import
    anything (no KeyboardInterrupt traceback from a worker), and the main process still gets the Ctrl-C."""
    script = tmp_path / "spawn_window.py"
    script.write_text(SPAWN_WINDOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == f"[] [{int(signal.SIGINT)}] [True, True] True"
