"""Options typed `X | None` through the registry: None and an X are accepted, anything else is a TypeError naming it."""

from __future__ import annotations

import re

import pytest

import strategies

# (strategy, option, a valid value, how the strategy stores it): options annotated `float | None` / `int | None`
_OPTIONAL = [
    ("quadratic-penalty", "tolerance", 0.01, 0.01),
    ("log-barrier", "growth", 2, 2.0),  # an int is a valid float
    ("lagrangian", "num_samples", 10, 10),
    ("slack-lagrangian", "output_width", 3, 3),
    ("augmented-lagrangian", "dual_lr", 0.5, 0.5),
]


@pytest.mark.parametrize(("name", "option", "valid", "stored"), _OPTIONAL)
def test_an_optional_option_accepts_its_type_and_none(name: str, option: str, valid: object, stored: object) -> None:
    assert getattr(strategies.get(name, **{option: valid}), option) == stored
    strategies.get(name, **{option: None})


@pytest.mark.parametrize(("name", "option", "valid", "stored"), _OPTIONAL)
@pytest.mark.parametrize("bad", ["2", [2], True])
def test_an_optional_option_refuses_other_types_by_name(
    name: str, option: str, valid: object, stored: object, bad: object
) -> None:
    with pytest.raises(
        TypeError, match=rf"^option '{option}' of strategy '{name}' must be (float|int) \| None, got {re.escape(repr(bad))}"
    ):
        strategies.get(name, **{option: bad})
