"""The one registry of strategies: ``available()``, ``get(name, **options)``, ``register(name)``.

Options are a strategy class's keyword-only ``__init__`` parameters; their annotations are the
accepted types. Unknown names and unknown or ill-typed options raise errors that list the
accepted ones; a bad value of an enumerated (``Literal``) option raises ``ValueError`` listing the
valid values (:func:`strategies._options.check_choice`, the check every constructor uses).
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from strategies._options import check_choice, literal_choices

if TYPE_CHECKING:  # pragma: no cover
    from strategies._base import Strategy

_REGISTRY: dict[str, type[Strategy]] = {}
S = TypeVar("S", bound=type)


def register(name: str) -> Callable[[S], S]:
    """Class decorator: make a :class:`~strategies.Strategy` subclass selectable as ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"strategy name must be a non-empty string, got {name!r}.")

    def decorate(cls: S) -> S:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a strategy named {name!r} is already registered ({_REGISTRY[name].__name__}).")
        cls.name = name  # type: ignore[attr-defined]  # S is bound to type; register decorates Strategy subclasses
        _REGISTRY[name] = cls
        return cls

    return decorate


def available(family: str | None = None) -> list[str]:
    """Names of the registered strategies (of one ``family`` if given), sorted."""
    return sorted(n for n, cls in _REGISTRY.items() if family is None or cls.family == family)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``; unknown names raise ``KeyError`` with close matches."""
    if not isinstance(name, str):
        raise TypeError(f"strategy name must be a string, got {type(name).__name__}.")
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown strategy {name!r}.{hint} Known strategies: {', '.join(available())}.") from None


def _keyword_only(function: Callable) -> dict[str, inspect.Parameter]:
    params = inspect.signature(function).parameters.values()
    return {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def options_of(cls: type) -> dict[str, inspect.Parameter]:
    """The options a strategy class accepts: its keyword-only constructor parameters, then the
    options every strategy shares (the keyword-only parameters of ``Strategy.configure``, e.g.
    ``on_nonfinite``)."""
    common = _keyword_only(cls.configure) if hasattr(cls, "configure") else {}
    return {**_keyword_only(typing.cast(Any, cls).__init__), **common}


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def get(name: str, **options: Any) -> Strategy:
    """Build the strategy registered as ``name`` with ``options`` (keyword arguments)."""
    cls = strategy_class(name)
    accepted = options_of(cls)
    own = _keyword_only(cls.__init__)
    hints = {**typing.get_type_hints(cls.configure), **typing.get_type_hints(cls.__init__)}
    for key, value in options.items():
        if key not in accepted:
            listed = ", ".join(accepted) or "none"
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"strategy {name!r} has no option {key!r}.{hint} Its options are: {listed}.")
        choices = literal_choices(hints.get(key))
        if choices is not None:  # an enumerated option: ValueError listing the values, as the constructor says
            check_choice(key, value, choices, name)
        elif not _type_ok(value, hints.get(key, inspect.Parameter.empty)):
            raise TypeError(
                f"option {key!r} of strategy {name!r} must be {_type_name(hints[key])}, got {value!r} ({type(value).__name__})."
            )
    strategy = cls(**{k: v for k, v in options.items() if k in own})
    return strategy.configure(**{k: v for k, v in options.items() if k not in own})


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
