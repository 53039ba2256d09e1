"""The registry: names, options, errors, and the support matrix of `constrain list`."""

from __future__ import annotations

import pytest
import torch

import strategies
from experiments.cli import main
from experiments.listing import CONSTRAINTS, support_matrix
from strategies import NotAttachedError, Strategy, UnsupportedConstraint


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match="Did you mean 'quadratic-penalty'") as info:
        strategies.get("quadratic-penaly")
    assert "Known strategies" in str(info.value)


def test_unknown_and_ill_typed_options():
    with pytest.raises(TypeError, match="no option 'wieght'.*weight"):
        strategies.get("quadratic-penalty", wieght=1.0)
    with pytest.raises(TypeError, match="option 'weight' .* must be float"):
        strategies.get("quadratic-penalty", weight="big")
    with pytest.raises(ValueError, match="one of 'weights', 'gradient'"):
        strategies.get("projected", mode="update")


def test_register_a_new_strategy():
    @strategies.register("test-noop")
    class Noop(Strategy):
        family = "test"
        summary = "does nothing"

    assert "test-noop" in strategies.available()
    assert isinstance(strategies.get("test-noop"), Noop)
    with pytest.raises(ValueError, match="already registered"):
        strategies.register("test-noop")(type("Other", (Strategy,), {}))


def test_every_family_is_registered():
    families = {strategies.strategy_class(n).family for n in strategies.available()}
    assert {"penalty", "projected", "l1-regularization"} <= families


def test_use_before_attach_and_bad_constraints():
    s = strategies.get("quadratic-penalty")
    with pytest.raises(NotAttachedError, match="attach"):
        s.loss(torch.tensor(1.0))
    with pytest.raises(TypeError, match="on_output"):
        s.attach(torch.nn.Linear(2, 2), ["not a target"])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        s.attach("model", [])


def test_output_constraint_needs_outputs():
    from constrain import NonNegative, on_output

    s = strategies.get("quadratic-penalty")
    s.attach(torch.nn.Linear(2, 2), [on_output(NonNegative())])
    with pytest.raises(ValueError, match="strategy.loss\\(objective, outputs\\)"):
        s.loss(torch.tensor(1.0))


def test_support_matrix_matches_attach():
    """Every cell the matrix calls supported attaches; every refused one raises UnsupportedConstraint."""
    matrix = support_matrix()
    assert set(matrix) == set(strategies.available())
    for name, row in matrix.items():
        for label, reason in row.items():
            target = CONSTRAINTS[label]
            model = torch.nn.Module()
            model.layer = torch.nn.Linear(2, 2)
            with torch.no_grad():  # strictly feasible for barriers: small positive weights
                model.layer.weight.fill_(0.1)
            if reason is None:
                assert strategies.get(name).attach(model, [target]) is model
            else:
                with pytest.raises(UnsupportedConstraint):
                    strategies.get(name).attach(model, [target])


def test_constrain_list_prints_the_matrix(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Support matrix" in out and "projected" in out and "L1 ball on outputs" in out
