"""Option checks shared by every strategy: one wording for an enumerated option, one for a positive number.

An enumerated option is a constructor keyword annotated with ``Literal[...]`` (or ``Literal[...] | None``).
:meth:`strategies.Strategy.__new__` checks every such option of the class being built with
:func:`check_literal_options`, so ``strategies.get(name, ...)`` and a direct ``Class(...)`` refuse a bad value
the same way, before the constructor runs. Options whose valid values are not a ``Literal`` (a name or a
callable) call :func:`check_choice` for their string values themselves. :func:`check_choice` and
:func:`check_positive` live in ``constrain._checks`` (the sets and the references use them too) and are
re-exported here for the strategies.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any

from constrain._checks import check_choice, check_positive

__all__ = ["check_choice", "check_literal_options", "check_positive", "literal_choices"]


def literal_choices(annotation: Any) -> tuple[object, ...] | None:
    """The values of a ``Literal[...]`` annotation (``None`` added for ``Literal[...] | None``); None if the
    annotation is anything else (a union with other types is checked by the constructor)."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    args = typing.get_args(annotation)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and typing.get_origin(rest[0]) is typing.Literal:
            return (*typing.get_args(rest[0]), None)
    return None


def _hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except (NameError, TypeError):  # a user's class with unresolvable annotations: nothing to check
        return {}


def check_literal_options(cls: type, options: Mapping[str, object]) -> None:
    """Check every option of ``cls.__init__`` annotated with a ``Literal`` that ``options`` gives."""
    if not options:
        return
    init = typing.cast(Any, cls).__init__  # the class's own constructor, read from the class
    hints = _hints(init)
    keyword = {p.name for p in inspect.signature(init).parameters.values() if p.kind is p.KEYWORD_ONLY}
    for key, value in options.items():
        choices = literal_choices(hints.get(key)) if key in keyword else None
        if choices is not None:
            check_choice(key, value, choices, getattr(cls, "name", ""))
