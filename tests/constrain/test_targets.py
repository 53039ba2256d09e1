"""Targets: names resolve to parameters (also parametrized ones), gather and split are inverse."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from constrain import Affine, L1Ball, NonNegative, OutputTarget, ParameterTarget, on_output, on_parameter


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
        self.head = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.tensor([1.5, -0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) * self.scale


class _Softplus(nn.Module):
    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(v)


def test_on_output_and_labels() -> None:
    target = on_output(L1Ball(2.0))
    assert isinstance(target, OutputTarget) and "L1Ball" in target.label
    target = on_parameter("head.weight", NonNegative())
    assert isinstance(target, ParameterTarget) and target.names == ("head.weight",)
    assert target.label == "head.weight in NonNegative()"
    assert on_parameter(["body.0.bias", "scale"], Affine(torch.ones(1, 6), 0.0)).names == ("body.0.bias", "scale")


def test_gather_split_round_trip_with_an_affine_set_across_parameters() -> None:
    torch.manual_seed(0)
    model = _Net()
    names = ["body.0.weight", "head.bias", "scale"]
    sizes = [12, 2, 2]
    # tie body.0.weight[0, 0] = head.bias[1] = scale[0], and make the body weights sum to 1
    A = torch.zeros(3, sum(sizes))
    A[0, 0], A[0, 12 + 1] = 1.0, -1.0
    A[1, 0], A[1, 14] = 1.0, -1.0
    A[2, :12] = 1.0
    target = on_parameter(names, Affine(A, torch.tensor([0.0, 0.0, 1.0])))
    target.validate(model)
    flat = target.gather(model)
    expected = torch.cat([model.body[0].weight.reshape(-1), model.head.bias, model.scale])
    torch.testing.assert_close(flat.reshape(-1), expected)
    # project and write back: the parameters now satisfy A vec = c, each in its own shape
    parts = target.split(target.set.project(flat.double()).to(flat.dtype), model)
    assert [p.shape for p in parts] == [torch.Size([4, 3]), torch.Size([2]), torch.Size([2])]
    with torch.no_grad():
        for name, part in zip(names, parts, strict=True):
            module, _, attr = name.rpartition(".")
            getattr(model.get_submodule(module), attr).copy_(part)
    assert target.set.contains(target.gather(model).double(), tol=1e-5).all()
    assert float(model.body[0].weight[0, 0].detach()) == pytest.approx(float(model.head.bias[1].detach()), abs=1e-5)
    assert float(model.body[0].weight.detach().sum()) == pytest.approx(1.0, abs=1e-5)
    # the round trip itself is exact
    for before, after in zip(target.tensors(model), target.split(target.gather(model), model), strict=True):
        assert torch.equal(before, after)


def test_row_wise_target_gathers_one_parameter() -> None:
    model = _Net()
    target = on_parameter("head.weight", L1Ball(1.0))
    rows = target.gather(model)
    assert rows.shape[-1] == 4 and rows.numel() == 8
    torch.testing.assert_close(rows.reshape(2, 4), model.head.weight)


def test_parametrized_weight_names_still_resolve() -> None:
    model = _Net()
    parametrize.register_parametrization(model.head, "weight", _Softplus())
    names = {name for name, _ in model.named_parameters()}
    assert "head.parametrizations.weight.original" in names and "head.weight" not in names
    target = on_parameter("head.weight", NonNegative())
    target.validate(model)  # the user-facing name, not the parametrization's internals
    (value,) = target.tensors(model)
    torch.testing.assert_close(value, nn.functional.softplus(model.head.parametrizations.weight.original))
    assert (value >= 0).all()
    # unknown names list the user-facing names, parametrized ones included
    with pytest.raises(KeyError, match=r"its parameters are: body\.0\.bias, body\.0\.weight, head\.bias, head\.weight, scale"):
        on_parameter("head.wieght", NonNegative()).validate(model)
    # frozen originals are reported under the user-facing name
    model.head.parametrizations.weight.original.requires_grad_(False)
    with pytest.raises(ValueError, match=r"parameter 'head\.weight' is frozen"):
        target.validate(model)


def test_top_level_parameter_of_a_bare_module() -> None:
    layer = nn.Linear(3, 2)
    target = on_parameter(["weight", "bias"], Affine(torch.ones(1, 8), 0.0))
    target.validate(layer)
    torch.testing.assert_close(target.gather(layer).reshape(-1), torch.cat([layer.weight.reshape(-1), layer.bias]))


# ---------------------------------------------------------------------------------------------
# a set checks the shape it was built for (issue 11.2)


def test_a_tie_on_the_transposed_weight_is_refused_naming_both_shapes() -> None:
    """``Affine.tie((32, 4), ...)`` on ``nn.Linear(32, 4).weight`` (shape (4, 32)): same size, wrong entries."""
    import strategies

    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    groups = [[(0, 0), (1, 1)], [(2, 3), (5, 0)]]
    wrong = Affine.tie((32, 4), groups)
    assert wrong.size == model[2].weight.numel() and wrong.shape == (32, 4)
    pattern = (
        r"built for a parameter of shape \(32, 4\), but it is attached to '2\.weight' of shape \(4, 32\)\. "
        r"Parameters have torch's layout \(out_features, in_features\)"
    )
    for name in ("projected", "quadratic-penalty", "lagrangian", "reparam-null-space"):
        with pytest.raises(ValueError, match=pattern):
            strategies.get(name).attach(model, on_parameter("2.weight", wrong))
    # the right shape attaches, and ties the listed entries of W (out_features, in_features)
    right = Affine.tie((4, 32), [[(0, 0), (1, 1)], [(2, 3), (3, 0)]])
    strategies.get("projected").attach(model, on_parameter("2.weight", right))
    w = model[2].weight.detach()
    assert float(w[0, 0]) == pytest.approx(float(w[1, 1]), abs=1e-6)
    assert float(w[2, 3]) == pytest.approx(float(w[3, 0]), abs=1e-6)


def test_affine_shape_is_optional_checked_and_kept() -> None:
    A = torch.randn(2, 6, dtype=torch.float64)
    assert Affine(A, 0.0).shape is None  # no shape: any parameters with 6 entries in all
    on_parameter("body.0.bias", Affine(torch.ones(1, 4), 0.0)).validate(_Net())
    s = Affine(A, torch.ones(2), shape=(2, 3))
    assert s.shape == (2, 3) and s.scaled(2.0).shape == (2, 3) and "shape (2, 3)" in repr(s)
    with pytest.raises(ValueError, match=r"shape \(4, 2\) has 8 entries but A has 6 columns"):
        Affine(A, 0.0, shape=(4, 2))
    with pytest.raises(TypeError, match="shape must be an int or a sequence of ints"):
        Affine(A, 0.0, shape="2x3")
    # a shape never spans several parameters
    with pytest.raises(ValueError, match=r"built for a parameter of shape \(2, 4\), but it is attached to 'head\.bias' of shape"):
        on_parameter(["head.bias", "scale", "body.0.bias"], Affine(torch.ones(1, 8), 0.0, shape=(2, 4))).validate(_Net())


def test_a_radius_per_row_must_match_the_parameter_rows() -> None:
    model = _Net()
    on_parameter("head.weight", L1Ball(torch.tensor([1.0, 2.0]))).validate(model)  # head.weight is (2, 4)
    with pytest.raises(ValueError, match=r"radius of shape \(3,\), but 'head\.weight' \(2, 4\) has 2 row\(s\)"):
        on_parameter("head.weight", L1Ball(torch.ones(3))).validate(model)
