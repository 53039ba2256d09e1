"""PSiLON Net: the model, its path norms against brute force and sampled gradients, pruning, the quick study."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils import parametrize

import strategies
from experiments import psilon as ps
from experiments import psilon_study


def _randomize_lengths(net: ps.Net, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in net.layers:
            g = ps.layer_length(layer)
            g.copy_((torch.rand(g.shape, generator=gen, dtype=g.dtype) * 2 - 1) * 1.5)  # some negative lengths


def _brute_force_path_norm(weights: list[torch.Tensor]) -> float:
    """Sum over every input-output path of the product of |w| (plain MLP), by enumeration."""
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    total = 0.0
    for path in itertools.product(*(range(n) for n in sizes)):
        prod = 1.0
        for w, (j, i) in zip(weights, zip(path[:-1], path[1:])):
            prod *= abs(float(w[i, j]))
        total += prod
    return total


@pytest.mark.parametrize("kind", ["psilon", "psilon-res"])
def test_every_layer_uses_the_toolkit_l1_weight_norm(kind: str) -> None:
    torch.manual_seed(0)
    net = ps.build(kind, 5, 3, hidden=8, hidden_layers=2)
    _randomize_lengths(net, 1)
    for i, layer in enumerate(net.layers):
        assert parametrize.is_parametrized(layer, "weight")
        assert any(isinstance(m, strategies.L1WeightNorm) for m in layer.parametrizations["weight"])
        g = ps.layer_length(layer)
        last = i == len(net.layers) - 1
        assert g.numel() == (3 if last else 1)  # shared in hidden layers, one per output on the last
        rows = layer.weight.abs().sum(1)
        torch.testing.assert_close(rows, g.abs().reshape(-1).expand_as(rows))


def test_residual_blocks_start_as_the_identity() -> None:
    torch.manual_seed(0)
    net = ps.build("psilon-res", 6, 4, hidden=10, hidden_layers=3)
    x = torch.randn(32, 6)
    embed = net.layers[0](x)
    for block in net.layers[1:-1]:
        assert float(ps.layer_length(block).detach().abs().max()) == 0.0
        assert torch.equal(block.weight, torch.zeros_like(block.weight))
        z = embed + block(ps.crelu(embed))
        torch.testing.assert_close(z, embed, rtol=0, atol=0)
    torch.testing.assert_close(net(x), net.layers[-1](ps.crelu(embed)))
    # they do train: the block length receives a gradient
    net(x).square().sum().backward()
    assert float(net.layers[1].parametrizations["weight"][0].raw_length.grad.abs().sum()) > 0


def test_explicit_path_norm_matches_brute_force_enumeration() -> None:
    torch.manual_seed(0)
    net = ps.build("mlp", 3, 2, hidden=4, hidden_layers=1)
    expected = _brute_force_path_norm([w.detach() for w in net.weights()])
    assert float(ps.path_norm_explicit(net).detach()) == pytest.approx(expected, rel=1e-5)


def test_plain_psilon_product_form_equals_the_explicit_path_norm() -> None:
    torch.manual_seed(0)
    net = ps.build("psilon", 7, 3, hidden=12, hidden_layers=2)
    _randomize_lengths(net, 2)
    with torch.no_grad():
        assert float(ps.path_norm_bound(net)) == pytest.approx(float(ps.path_norm_explicit(net)), rel=1e-5)


def test_norm_inf_to_1_is_the_maximum_over_the_unit_cube() -> None:
    gen = torch.Generator().manual_seed(0)
    J = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    for n in range(4):
        # ||J||_{inf->1} is attained at a vertex of the cube: enumerate all of them
        best = max(float((J[n] @ torch.tensor(u, dtype=torch.float64)).abs().sum())
                   for u in itertools.product((1.0, -1.0), repeat=5))
        assert float(ps.norm_inf_to_1(J[n : n + 1])) == pytest.approx(best, rel=1e-12)
    single = torch.randn(6, 1, 5, generator=gen)  # one output: the l1 norm of the gradient
    torch.testing.assert_close(ps.norm_inf_to_1(single), single.abs().sum((1, 2)))


@pytest.mark.parametrize("kind", ["psilon", "psilon-res", "mlp", "standard"])
@pytest.mark.parametrize("seed", [0, 1])
def test_product_bound_ge_explicit_ge_sampled_gradient_norm(kind: str, seed: int) -> None:
    torch.manual_seed(seed)
    net = ps.build(kind, 5, 3, hidden=8, hidden_layers=2)
    if kind.startswith("psilon"):
        _randomize_lengths(net, seed)
    X = torch.randn(64, 5)
    with torch.no_grad():
        explicit = float(ps.path_norm_explicit(net))
        original = float(ps.path_norm_explicit(net, improved=False))
    sampled = ps.sampled_lipschitz(net, X, n=512, seed=seed)
    assert explicit >= sampled * (1 - 1e-5) > 0
    assert original >= explicit * (1 - 1e-6)  # the improved residual bound is never looser
    if kind.startswith("psilon"):
        product = float(ps.path_norm_bound(net).detach())
        assert product >= explicit * (1 - 1e-6)
        if kind == "psilon-res":
            assert float(ps.path_norm_bound(net, improved=False).detach()) >= original * (1 - 1e-6)
    # the sampled value is a real Lipschitz lower bound: a finite difference never exceeds the bound
    x, y = X[:32], X[32:] + 0.1 * torch.randn(32, 5)
    with torch.no_grad():
        ratio = (net(x) - net(y)).abs().sum(1) / (x - y).abs().amax(1)
    assert float(ratio.max()) <= explicit * (1 + 1e-5)


def test_path_norm_bound_refuses_unnormalized_nets() -> None:
    with pytest.raises(TypeError, match="PSiLON"):
        ps.path_norm_bound(ps.build("mlp", 3, 2, hidden=4))


def _set_weights(net: ps.Net, weights: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, w in zip(net.layers, weights):
            layer.weight.copy_(w)


def test_pruning_accounting_on_a_known_pattern() -> None:
    net = ps.Net(3, 4, 2, hidden_layers=1)
    ones = torch.ones
    w0 = ones(4, 3)
    w0[3] = 0  # hidden unit 3 of layer 0: no input reaches it (a constant)
    w1 = ones(4, 4)
    w1[:, 2] = 0  # unit 2 of layer 0 feeds nothing ...
    w1[1] = 0  # ... and unit 1 of layer 1 has no input
    w2 = ones(2, 4)
    w2[:, 0] = 0  # unit 0 of layer 1 reaches no output
    _set_weights(net, [w0, w1, w2])
    live = ps.live_masks(net)
    # layer 0: rows 0,1 live (row 2 feeds nothing, row 3 is zero) -> 2 x 3
    assert int(live[0].sum()) == 6
    # layer 1: rows 2,3 (row 0 reaches no output, row 1 is zero); columns 0,1 (2 dead end, 3 constant) -> 2 x 2
    assert int(live[1].sum()) == 4
    # layer 2: columns 2,3 (0 is zero, 1 has no input) -> 2 x 2
    assert int(live[2].sum()) == 4
    assert ps.flops(net, sparse=False) == 2 * (12 + 16 + 8)
    assert ps.flops(net) == 2 * (6 + 4 + 4)
    # with zero biases the constant units are 0, so dropping every weight that is not live changes nothing
    x = torch.randn(16, 3)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.zero_()
        before = net(x)
        for layer, mask in zip(net.layers, live):
            layer.weight.mul_(mask)
        torch.testing.assert_close(net(x), before)


def test_pruning_accounting_residual() -> None:
    net = ps.Net(2, 3, 1, hidden_layers=1, residual=True)
    w0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # stream unit 2 starts constant
    w1 = torch.zeros(3, 6)
    w1[2, 0] = 1.0  # the block writes unit 0's positive part into unit 2 (now reachable)
    w1[1, 5] = 1.0  # reads constant unit 2's negative part into unit 1: foldable, not live
    head = torch.zeros(1, 6)
    head[0, 2] = 1.0  # reads unit 2 only; unit 0 and 1 reach the output only through the block
    _set_weights(net, [w0, w1, head])
    live = ps.live_masks(net)
    assert [int(m.sum()) for m in live] == [1, 1, 1]  # w0[0,0], w1[2,0], head[0,2]
    assert ps.flops(net) == 6
    assert ps.flops(net, sparse=False) == 2 * (6 + 18 + 6)


@pytest.mark.parametrize("kind", ["psilon", "psilon-res", "standard"])
def test_prune_zeroes_exactly_the_near_zero_weights_and_keeps_the_original(kind: str) -> None:
    torch.manual_seed(0)
    net = ps.build(kind, 5, 3, hidden=8, hidden_layers=1)
    if kind.startswith("psilon"):
        _randomize_lengths(net, 0)
    x = torch.randn(20, 5)
    with torch.no_grad():
        reference = net(x)
        torch.testing.assert_close(ps.prune(net, 0.0)(x), reference)  # nothing pruned at tol 0
        tol = 0.05
        pruned = ps.prune(net, tol)
        for w, p in zip(net.weights(), pruned.weights()):
            mask = ps.near_zero_mask(w, tol)
            assert torch.equal(p == 0, mask | (w == 0))
            torch.testing.assert_close(p[~mask], w[~mask])
        torch.testing.assert_close(net(x), reference)  # materialize/prune never touch the original
    report = ps.prune_report(net, tol)
    assert report.flops_pruned <= report.flops_dense and 0 <= report.saved <= 1


def test_quick_study_end_to_end(tmp_path) -> None:
    status = psilon_study.main(["--quick", "--figures", str(tmp_path), "--no-progress"])
    assert status == 0
    text = (tmp_path / "psilon.md").read_text()
    for model in psilon_study.MODELS:
        assert f"| {model} |" in text
    for name in ("psilon_metric.png", "psilon_lipschitz.png", "psilon_pruning.png"):
        assert (tmp_path / name).stat().st_size > 1000
    # the theory check holds in every cell: "k/k" in the bound >= sampled column
    rows = [[c.strip() for c in line.split("|")] for line in text.splitlines() if line.startswith("| ")]
    checked = [r for r in rows if r[2] not in ("model", "rf") and not r[2].startswith("-")]
    assert len(checked) == 2 * 5  # two data sets, five networks
    for cells in checked:
        held, total = cells[9].split("/")
        assert held == total, cells


@pytest.mark.parametrize("name, module", [("psilon", "experiments.psilon_study"), ("l1", "experiments.l1_study")])
def test_registered_as_constrain_study_subcommands(name: str, module: str) -> None:
    import argparse

    from experiments import study_cmd

    parser = argparse.ArgumentParser(prog="constrain")
    study_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study", name, "--quick", "--figures", "somewhere", "--workers", "1"])
    assert args.func.__module__ == module and args.quick and str(args.figures) == "somewhere" and args.workers == 1
