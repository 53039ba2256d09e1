"""Output paths of the commands: checked before any work starts, and where a run's figures go.

- :func:`prepare_output_dir` / :func:`check_output_file`: create the folder (or the file's folder)
  and write a probe file in it, so that a path that cannot be written fails in a second with the
  flag's name, not at the end of a long run.
- :func:`figures_dir`: the figures and tables of the documented full run go to ``figures/`` (the
  files the README shows); any other run (``--quick``, other problems, seeds, steps...) writes
  them under its ``--out`` folder unless ``--figures`` is given, so it never overwrites them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Where the documented full runs write the figures and tables that the README shows.
DEFAULT_FIGURES = Path("figures")


def _unwritable(folder: Path) -> str | None:
    """Why no file can be written in ``folder`` (created with its parents if missing), or None."""
    if folder.exists() and not folder.is_dir():
        return "it is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".constrain-write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return error.strerror or str(error)
    return None


def prepare_output_dir(path: Path | str, flag: str) -> Path:
    """Create folder ``path`` (with its parents) if needed and check that a file can be written in
    it; ``ValueError`` naming ``flag`` (``"--out"``) if not. Returns ``path`` as a ``Path``."""
    path = Path(path)
    why = _unwritable(path)
    if why is not None:
        raise ValueError(f"{flag} {path}: cannot write there ({why}); give a folder you can write to.")
    return path


def check_output_file(path: Path | str, flag: str) -> Path:
    """Check that file ``path`` can be written (its folder is created if needed; the file itself is
    not touched); ``ValueError`` naming ``flag`` (``"--json"``) if not."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: it is a folder; give a file name (e.g. {path / 'results.json'}).")
    why = _unwritable(path.parent)
    if why is None and path.exists() and not os.access(path, os.W_OK):
        why = "the file is read-only"
    if why is not None:
        raise ValueError(f"{flag} {path}: cannot write it ({why}); give a file in a folder you can write to.")
    return path


def figures_dir(figures: Path | None, out: Path, documented_run: bool) -> Path:
    """Where a run's figures and tables go: ``figures`` if the user gave ``--figures``; else
    :data:`DEFAULT_FIGURES` for the documented full run and ``out/figures`` for any other run."""
    if figures is not None:
        return Path(figures)
    return DEFAULT_FIGURES if documented_run else Path(out) / "figures"
