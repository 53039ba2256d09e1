"""Worker processes that stop at once when the user interrupts, and the CLI's signal handling.

A terminal's Ctrl-C sends SIGINT to the whole process group, workers included. Here:

- :func:`handle_interrupts` (installed by the ``constrain`` command around every subcommand):
  the first SIGINT or SIGTERM raises :class:`Interrupted` (a ``KeyboardInterrupt``) in the main
  process; a second one kills the workers (SIGKILL) and exits at once with ``128 + signal``.
- :class:`WorkerPool`: spawned processes that ignore SIGINT (no tracebacks from workers; the
  main process decides), each fed one task at a time over its own pipe. Leaving the pool on an
  exception (the interrupt) terminates every worker and waits at most about a second for them,
  so nothing keeps running and nothing hangs at exit. Work already returned is kept by the caller.
- :func:`run_tasks`: ``fn(*args)`` for each task, in this process (``workers <= 1``) or in a pool,
  results in task order.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

#: The signals that stop a command: Ctrl-C and ``kill``.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Worker processes alive in this process, killed by a second interrupt before exiting.
_LIVE: set[multiprocessing.process.BaseProcess] = set()


class Interrupted(KeyboardInterrupt):
    """The user stopped the command with ``signum`` (SIGINT: Ctrl-C, SIGTERM: ``kill``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """``128 + signal number``, the shell's convention (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signum


def _kill_live_workers() -> None:
    for process in list(_LIVE):
        with contextlib.suppress(Exception):
            process.kill()


@contextlib.contextmanager
def handle_interrupts() -> Iterator[None]:
    """While active (main thread only): the first SIGINT/SIGTERM raises :class:`Interrupted`; a
    second one kills the worker processes and exits with ``128 + signal`` without cleaning up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) > 1:
            _kill_live_workers()
            os.write(2, b"interrupted again; stopping now.\n")
            os._exit(128 + signum)
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def _children_ignore_interrupts() -> Iterator[None]:
    """Processes started inside ignore SIGINT from their first instruction; this one keeps a Ctrl-C when the
    signal reaches its main thread.

    A spawned interpreter inherits neither this process's signal mask (``_posixsubprocess`` clears
    it) nor its Python handlers (``exec`` resets them), but it does inherit ``SIG_IGN``, which
    Python's startup keeps (it installs ``KeyboardInterrupt`` only over the default action). So
    SIGINT is set to ``SIG_IGN`` while the children start, with SIGINT blocked meanwhile: on Linux a
    blocked signal is never discarded as ignored, so a Ctrl-C pressed in this window stays pending
    and reaches the restored handler when the mask is restored (``handle_interrupts`` raises it).
    multiprocessing's resource tracker unblocks SIGINT after starting itself, so it is started
    first. Main thread of a POSIX process only (elsewhere nothing changes).

    Known gap: only the calling thread blocks SIGINT. A process-directed signal goes to any thread that does
    not block it, and threads started earlier by native libraries (torch's OpenMP pool) do not; such a thread
    discards it under ``SIG_IGN``. A Ctrl-C pressed in this window (the workers' ``start``, some ms each) can
    then be lost, and the study goes on: press it again. Closing the gap needs the workers' launch itself to
    block the signal (``posix_spawn`` with ``setsigmask``), which multiprocessing does not expose."""
    if not (_main_thread() and hasattr(signal, "pthread_sigmask")):
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)  # a pending Ctrl-C is delivered now


class WorkerError(RuntimeError):
    """A worker process died, or a task's exception could not be sent back; also the ``__cause__`` of
    a task's exception re-raised here, with the worker's traceback as its message."""


def _serve(conn: Connection, initializer: Callable[[], None] | None) -> None:
    """A worker's loop: receive ``(index, fn, args)``, send ``(index, ok, value)``; ``None`` ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited at the spawn already; the main process handles Ctrl-C
    if initializer is not None:
        initializer()
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the main process is gone
            return
        if task is None:
            return
        index, fn, args = task
        try:
            conn.send((index, True, fn(*args)))
        except Exception as error:  # noqa: BLE001 - sent to the main process, which re-raises it
            text = traceback.format_exc()
            try:
                conn.send((index, False, (error, text)))
            except Exception:  # noqa: BLE001 - an exception that does not pickle: its text only
                conn.send((index, False, (None, text)))


class WorkerPool:
    """``workers`` spawned processes fed one task at a time; a context manager that terminates
    them when left by an exception (``KeyboardInterrupt`` included)."""

    def __init__(self, workers: int, initializer: Callable[[], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}.")
        context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        # A Ctrl-C pressed while the workers start is delivered when the context restores the signal mask,
        # so the workers already started are stopped outside the context too.
        try:
            with _children_ignore_interrupts():  # no worker prints a KeyboardInterrupt traceback while it imports
                for _ in range(workers):
                    ours, theirs = context.Pipe()
                    process = context.Process(target=_serve, args=(theirs, initializer), daemon=True)
                    process.start()
                    theirs.close()
                    _LIVE.add(process)
                    self._workers.append((process, ours))
        except BaseException:
            self.terminate()
            raise

    def imap_unordered(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """Yield ``(i, fn(*tasks[i]))`` as tasks finish. A task's exception is raised here (its cause: a
        :class:`WorkerError` with the worker's traceback); a worker that dies raises :class:`WorkerError`."""
        pending = iter(enumerate(tasks))
        busy: dict[Connection, int] = {}

        def feed(conn: Connection) -> None:
            task = next(pending, None)
            if task is not None:
                conn.send((task[0], fn, task[1]))
                busy[conn] = task[0]

        by_conn = {conn: process for process, conn in self._workers}

        def died(conn: Connection) -> WorkerError:
            process = by_conn[conn]
            process.join(1)
            return WorkerError(
                f"a worker process ({process.pid}) died (exit code {process.exitcode}) while running "
                f"task {busy.get(conn)}; its error, if any, is printed above."
            )

        def busy_connection(ready: object) -> Connection:
            assert isinstance(ready, Connection) and ready in busy  # wait() returns the connections it was given
            return ready

        for _, conn in self._workers:
            try:
                feed(conn)
            except OSError:  # the worker is gone already (it failed while starting)
                raise died(conn) from None
        while busy:
            for ready in wait(list(busy)):
                conn = busy_connection(ready)
                try:
                    index, ok, value = conn.recv()
                except (EOFError, OSError):
                    raise died(conn) from None
                del busy[conn]
                if not ok:
                    error, text = value
                    # the task's own exception (an OSError stays an OSError), caused by the worker's traceback
                    raise (error or WorkerError(text.strip().splitlines()[-1])) from WorkerError(f"in the worker:\n{text}")
                try:
                    feed(conn)
                except OSError:
                    raise died(conn) from None
                yield index, value

    def close(self) -> None:
        """Tell every worker to finish and wait for them."""
        for _, conn in self._workers:
            with contextlib.suppress(OSError):
                conn.send(None)
        for process, conn in self._workers:
            process.join()
            conn.close()
            _LIVE.discard(process)

    def terminate(self) -> None:
        """Stop every worker now (SIGTERM, then SIGKILL for any still alive after a second)."""
        for process, _ in self._workers:
            with contextlib.suppress(Exception):
                process.terminate()
        for process, conn in self._workers:
            process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join(1.0)
            conn.close()
            _LIVE.discard(process)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.terminate()


def fork_on_linux() -> str:
    """The start method for child processes that should inherit this process's imports: ``"fork"`` on Linux
    (torch, cvxpy and the loaded kernels come with the fork: no start-up cost), else ``"spawn"`` (each child
    imports them again; macOS and Windows spawn by default, fork being unsafe or missing there)."""
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[tuple],
    workers: int = 1,
    *,
    initializer: Callable[[], None] | None = None,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[fn(*task) for task in tasks]``, in ``workers`` spawned processes when above 1 (and more
    than one task). ``on_result(i, result)`` is called as each task finishes (in completion order);
    the list is in task order. ``initializer`` runs once per worker process (not in this process)."""
    results: list[Any] = [None] * len(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for index, task in enumerate(tasks):
            results[index] = fn(*task)
            if on_result is not None:
                on_result(index, results[index])
        return results
    with WorkerPool(min(workers, len(tasks)), initializer) as pool:
        for index, value in pool.imap_unordered(fn, tasks):
            results[index] = value
            if on_result is not None:
                on_result(index, value)
    return results


def run_with_progress(
    fn: Callable[..., Any],
    tasks: Sequence[tuple],
    labels: Sequence[str],
    on_result: Callable[[int, Any], None],
    *,
    workers: int,
    total: int,
    desc: str,
    progress: bool = True,
    initializer: Callable[[], None] | None = None,
    warm_up: Callable[[], None] | None = None,
) -> None:
    """:func:`run_tasks` behind a progress bar of ``total`` runs (``total - len(tasks)`` already done):
    ``on_result(i, result)`` as each task finishes, ``labels[i]`` shown beside the bar. Serially (one
    worker or one task), in this process with one torch thread, after ``warm_up()`` if given; else in
    ``workers`` spawned processes set up by ``initializer``."""
    import sys

    import torch
    from tqdm import tqdm

    bar = tqdm(
        total=total, initial=total - len(tasks), disable=not progress, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True
    )

    def finished(index: int, result: Any) -> None:
        on_result(index, result)
        bar.set_postfix_str(labels[index], refresh=False)
        bar.update()

    try:
        if workers <= 1 or len(tasks) <= 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                if tasks and warm_up is not None:
                    warm_up()
                run_tasks(fn, tasks, 1, on_result=finished)
            finally:
                torch.set_num_threads(threads)
        else:
            run_tasks(fn, tasks, workers, initializer=initializer, on_result=finished)
    finally:
        bar.close()
