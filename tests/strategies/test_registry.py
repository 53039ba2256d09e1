"""The registry: names, options, errors, and the support matrix of `constrain list`."""

from __future__ import annotations

import inspect
import math
import typing

import pytest
import torch
import torch.optim.optimizer as optimizer_hooks

import strategies
from constrain import L1Ball
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


# ---------------------------------------------------------------------- options checked once
def _enumerated_options() -> list[tuple[str, str]]:
    """(strategy, option) for every option of every registered strategy whose valid values include names:
    a Literal, or a union with str (a name or something else, e.g. dual_optimizer, interior)."""
    cases = []
    for name in strategies.available():
        cls = strategies.strategy_class(name)
        hints = {**typing.get_type_hints(cls.configure), **typing.get_type_hints(cls.__init__)}
        for option in strategies.options_of(cls):
            annotation = hints.get(option)
            args = typing.get_args(annotation)
            if (
                typing.get_origin(annotation) is typing.Literal
                or str in args
                or any(typing.get_origin(a) is typing.Literal for a in args)
            ):
                cases.append((name, option))
    return cases


ENUMERATED = _enumerated_options()
BUILT_IN = strategies.available()  # before a test registers its own


def test_the_enumerated_options_are_found():
    found = set(ENUMERATED)
    assert {
        ("projected", "mode"),
        ("projected", "metric"),
        ("lagrangian", "multipliers"),
        ("reparameterization", "nonnegative"),
    } <= found
    assert {(name, "on_nonfinite") for name in BUILT_IN} <= found  # every strategy shares it
    assert ("reparam-null-space", "affine_form") in found and ("reparam-gauge", "interior") in found


@pytest.mark.parametrize(("name", "option"), ENUMERATED, ids=[f"{n}-{o}" for n, o in ENUMERATED])
def test_a_bad_enumerated_option_is_a_value_error_naming_it(name, option):
    """`get` and the class alike: ValueError naming the option (never a TypeError, never silently accepted)."""
    with pytest.raises(ValueError, match=f"{option}.*one of") as info:
        strategies.get(name, **{option: "grad"})
    assert "'grad'" in str(info.value)
    cls = strategies.strategy_class(name)
    if option in inspect.signature(cls.__init__).parameters:  # on_nonfinite is set by configure()
        with pytest.raises(ValueError, match=f"{option}.*one of"):
            cls(**{option: "grad"})


def test_a_valid_enumerated_option_is_kept():
    assert strategies.get("projected", mode="gradient").mode == "gradient"
    assert strategies.Projected(metric="euclidean").metric == "euclidean"
    assert strategies.get("reparam-exp").nonnegative == "exp"
    assert strategies.ExpReparameterization(eps=1e-3).eps == 1e-3
    with pytest.raises(TypeError, match="no option 'nonnegative'"):  # a fixed map cannot be changed
        strategies.ExpReparameterization(nonnegative="square")


@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_one_positive_check(value):
    """The same check and wording for a penalty weight, a dual step, an L1 strength and a radius."""
    for build in (
        lambda: strategies.get("quadratic-penalty", weight=value),
        lambda: strategies.get("lagrangian", dual_lr=value),
        lambda: strategies.get("l1-proximal", strength=value),
        lambda: L1Ball(value),
    ):
        with pytest.raises(ValueError, match="must be positive and finite"):
            build()


# ---------------------------------------------------------------------- one undo
def _hooks(model: torch.nn.Module) -> dict[tuple[str, str], list]:
    """Every hook on the model's modules and parameters, and torch's global optimizer hooks."""
    out: dict[tuple[str, str], list] = {}
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            if key.endswith("hooks") and isinstance(value, dict) and value:
                out[(prefix, key)] = list(value)
    for prefix, param in model.named_parameters():
        for key in ("_backward_hooks", "_post_accumulate_grad_hooks"):
            if getattr(param, key, None):
                out[(prefix, key)] = list(getattr(param, key))
    out[("optim", "post")] = list(optimizer_hooks._global_optimizer_post_hooks)
    return out


class _OneLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x[:, :2])  # x has 3 features: the catalogue's right-hand sides read them all


UNDO = [
    (name, label)
    for name in strategies.available()
    for label, target in CONSTRAINTS.items()
    if strategies.strategy_class(name).unsupported_reason(target) is None
]


@pytest.mark.parametrize(("name", "label"), UNDO, ids=[f"{n}-{label}" for n, label in UNDO])
def test_detach_undoes_attach(name, label):
    """After two training steps, detach() leaves the model as it was built (names, hooks, no parametrization,
    every parameter trainable) holding the constrained values it had, and the plain forward."""
    torch.manual_seed(0)
    model: torch.nn.Module = _OneLayer()
    with torch.no_grad():  # strictly feasible for barriers (outputs near 0.2), the tie and the L1 balls
        model.layer.weight.fill_(0.1)
        model.layer.bias.fill_(0.2)
    names, hooks = [n for n, _ in model.named_parameters()], _hooks(model)
    buffers = [n for n, _ in model.named_buffers()]
    strategy = strategies.get(name)
    model = strategy.attach(model, [CONSTRAINTS[label]])
    x, optimizer = 0.2 * torch.randn(16, 3), None
    for _ in range(2):
        out = model(x)
        loss = strategy.loss((out - 1).square().mean(), out)
        optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-2)  # after the first loss (lazy state)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        strategy.after_step()
    with torch.no_grad():
        values = {n: getattr(model.layer, n.split(".")[1]).detach().clone() for n in ("layer.weight", "layer.bias")}
    assert strategy.detach() is model
    assert [n for n, _ in model.named_parameters()] == names
    assert [n for n, _ in model.named_buffers()] == buffers
    assert _hooks(model) == hooks
    assert not torch.nn.utils.parametrize.is_parametrized(model)
    assert all(p.requires_grad for p in model.parameters())
    for n, value in values.items():
        torch.testing.assert_close(model.get_parameter(n), value, rtol=0, atol=0)
    torch.testing.assert_close(model(x), torch.nn.functional.linear(x[:, :2], values["layer.weight"], values["layer.bias"]))
    with pytest.raises(NotAttachedError):
        strategy.report()


def test_a_failed_attach_leaves_the_model_untouched():
    """mode="gradient" refuses a non-affine weight constraint inside attach, after the output's projection
    layer was installed: that layer is removed again and the strategy can be attached anew."""
    model = _OneLayer()
    hooks = _hooks(model)
    strategy = strategies.get("projected", mode="gradient")
    with pytest.raises(ValueError, match="mode='gradient'"):
        strategy.attach(model, [CONSTRAINTS["L1 ball on outputs"], CONSTRAINTS["weights >= 0"]])
    assert _hooks(model) == hooks and strategy.model is None
    x = torch.randn(4, 3)
    torch.testing.assert_close(model(x), model.layer(x[:, :2]))
    assert strategy.attach(model, [CONSTRAINTS["L1 ball on outputs"]]) is model
    with torch.no_grad():  # the projection layer of the second attach
        assert float(model(10 * x).abs().sum(-1).max()) <= 1 + 1e-6
