"""PSiLON Net: the model, its path norms against brute force and sampled gradients, pruning, the quick study."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

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
        for w, (j, i) in zip(weights, zip(path[:-1], path[1:], strict=True), strict=True):
            prod *= abs(float(w[i, j]))
        total += prod
    return total


def _official_crelu_weights(v: torch.Tensor, g: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official CReLUNormLinear normalization, written out on (in, out) matrices as the authors store
    them: W_tilde = max(|W_pos|, |W_neg|), norm = column sums (p=1) or column L2 norms, g * W / norm."""
    h = v.shape[1] // 2
    w_pos, w_neg = v[:, :h].T, v[:, h:].T  # (in, out)
    tilde = torch.maximum(w_pos.abs(), w_neg.abs())
    norm = tilde.sum(0, keepdim=True) if p == 1 else tilde.pow(2).sum(0, keepdim=True).sqrt()
    return (g.reshape(1, -1) * w_pos / norm).T, (g.reshape(1, -1) * w_neg / norm).T


@pytest.mark.parametrize("kind", ["psilon-res", "l1-ib", "l2-ob", "standard-res"])
def test_crelu_layers_normalize_as_the_official_code(kind: str) -> None:
    torch.manual_seed(0)
    net = ps.build(kind, 5, 3, hidden=8, hidden_layers=2)
    _randomize_lengths(net, 1)
    gen = torch.Generator().manual_seed(2)
    for layer in net.layers[1:]:
        original = layer.parametrizations["weight"].original
        with torch.no_grad():
            original.copy_(torch.randn(original.shape, generator=gen))  # halves differ now
        g = ps.layer_length(layer).detach().expand(layer.weight.shape[0], 1)
        pos, neg = _official_crelu_weights(original.detach(), g, ps.SPECS[kind].norm)
        torch.testing.assert_close(layer.weight[:, :8], pos)
        torch.testing.assert_close(layer.weight[:, 8:], neg)
        tilde = torch.maximum(layer.weight[:, :8].abs(), layer.weight[:, 8:].abs())
        size = tilde.sum(1) if ps.SPECS[kind].norm == 1 else tilde.square().sum(1).sqrt()
        torch.testing.assert_close(size, g.abs().reshape(-1))  # ||w_tilde_j||_p = |g|


@pytest.mark.parametrize("kind", ["psilon", "psilon-res"])
def test_psilon_lengths_are_shared_in_hidden_layers_and_per_output_last(kind: str) -> None:
    torch.manual_seed(0)
    net = ps.build(kind, 5, 3, hidden=8, hidden_layers=2)
    _randomize_lengths(net, 1)
    for i, layer in enumerate(net.layers):
        norm = ps.weight_norm_module(layer)
        assert isinstance(norm, strategies.L1WeightNorm) and norm.p == 1
        last = i == len(net.layers) - 1
        assert ps.layer_length(layer).numel() == (3 if last else 1)
    first = net.layers[0]  # a one-half layer: the toolkit's L1 weight normalization itself
    reference = strategies.L1WeightNorm(first.weight, radius=None, shared_length=True)
    with torch.no_grad():
        reference.raw_length.copy_(ps.layer_length(first))
        torch.testing.assert_close(first.weight, reference(first.parametrizations["weight"].original))


@pytest.mark.parametrize("kind", ["psilon", "psilon-res", "standard", "l2-ib"])
def test_official_initialization(kind: str) -> None:
    torch.manual_seed(0)
    hidden = 8
    net = ps.build(kind, 5, 3, hidden=hidden, hidden_layers=2)
    last = len(net.layers) - 1
    for i, layer in enumerate(net.layers):
        v = layer.parametrizations["weight"].original.detach()
        if net.residual and i > 0:
            assert torch.equal(v[:, :hidden], v[:, hidden:])  # W- starts equal to W+
            v = v[:, :hidden]
        # orthogonal: the smaller Gram matrix is the identity
        gram = v @ v.T if v.shape[0] <= v.shape[1] else v.T @ v
        torch.testing.assert_close(gram, torch.eye(gram.shape[0]), atol=1e-5, rtol=0)
        assert torch.equal(layer.bias.detach(), torch.zeros_like(layer.bias))
        block = net.residual and 0 < i < last
        assert torch.equal(ps.layer_length(layer).detach(), torch.full_like(ps.layer_length(layer), 0.0 if block else 1.0))
    # two draws differ (a random orthogonal matrix, not a fixed one)
    other = ps.build(kind, 5, 3, hidden=hidden, hidden_layers=2)
    assert not torch.equal(other.layers[0].parametrizations["weight"].original, net.layers[0].parametrizations["weight"].original)


def test_sparsification_blend_keeps_the_lengths_and_reaches_exact_zeros() -> None:
    from constrain import project_simplex

    torch.manual_seed(0)
    net = ps.build("psilon-res", 6, 3, hidden=10, hidden_layers=2)
    _randomize_lengths(net, 3)
    gen = torch.Generator().manual_seed(4)
    for layer in net.layers:
        original = layer.parametrizations["weight"].original
        with torch.no_grad():
            original.copy_(3 * torch.randn(original.shape, generator=gen))  # rows of L1 norm >> 1: sparse projections
    x = torch.randn(16, 6)
    for alpha in (0.0, 0.3, 1.0):
        ps.set_sparsify(net, alpha)
        with torch.no_grad():
            # the product form stays exact: every blend keeps ||w_tilde_j||_1 = |g|
            assert float(ps.path_norm_bound(net)) == pytest.approx(float(ps.path_norm_explicit(net)), rel=1e-5)
            assert ps.sampled_lipschitz(net, x, n=256) <= float(ps.path_norm_explicit(net)) * (1 + 1e-5)
    # at alpha = 1 the official projection: tau from W_tilde by the sort formula, applied to both halves
    layer = net.layers[1]
    v = layer.parametrizations["weight"].original.detach()
    tilde = torch.maximum(v[:, :10].abs(), v[:, 10:].abs())
    u, _ = torch.sort(tilde, dim=1, descending=True)
    cums = (u.cumsum(1) - 1) / torch.arange(1, 11)
    tau = cums.gather(1, ((cums < u).sum(1, keepdim=True) - 1))
    g = ps.layer_length(layer).detach()
    expected = g * torch.sign(v) * torch.relu(v.abs() - tau)  # the same tau for both halves
    torch.testing.assert_close(layer.weight.detach(), expected)
    torch.testing.assert_close(torch.relu(tilde - tau), project_simplex(tilde, 1.0, dim=1))
    assert ps.exact_zero_fraction(net) > 0.3
    with pytest.raises(ValueError, match="alpha"):
        ps.set_sparsify(net, 1.5)


def test_near_sparsity_is_the_official_entropy_measure() -> None:
    torch.manual_seed(0)
    net = ps.build("psilon-res", 5, 3, hidden=8, hidden_layers=1)
    _randomize_lengths(net, 5)
    values = []
    for i, layer in enumerate(net.layers):
        v = layer.parametrizations["weight"].original.detach().T  # (in, out), the official layout
        for half in [v] if i == 0 else [v[:8], v[8:]]:
            pv = half.abs() / half.abs().sum(0, keepdim=True)
            entropy = (-torch.log(pv + 1e-8) * pv).sum(0)
            values.append(1 - torch.exp(entropy) / half.shape[0])
    assert ps.near_sparsity(net) == pytest.approx(float(torch.cat(values).mean()), abs=1e-5)
    # the extremes: a row with one non-zero has 1 - 1/d; an all-zero row counts as 1
    plain = ps.Net(4, 2, 1, hidden_layers=0)
    with torch.no_grad():
        plain.layers[0].weight.copy_(torch.tensor([[0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
        plain.layers[1].weight.copy_(torch.tensor([[1.0, 1.0]]))
    assert ps.near_sparsity(plain) == pytest.approx(((1 - 1 / 4) + 1 + 0) / 3)


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
        best = max(
            float((J[n] @ torch.tensor(u, dtype=torch.float64)).abs().sum()) for u in itertools.product((1.0, -1.0), repeat=5)
        )
        assert float(ps.norm_inf_to_1(J[n : n + 1])) == pytest.approx(best, rel=1e-12)
    single = torch.randn(6, 1, 5, generator=gen)  # one output: the l1 norm of the gradient
    torch.testing.assert_close(ps.norm_inf_to_1(single), single.abs().sum((1, 2)))


@pytest.mark.parametrize("kind", ["psilon", "psilon-res", "mlp", "standard", "l1-ob", "l2-ib"])
@pytest.mark.parametrize("seed", [0, 1])
def test_product_bound_ge_explicit_ge_sampled_gradient_norm(kind: str, seed: int) -> None:
    torch.manual_seed(seed)
    net = ps.build(kind, 5, 3, hidden=8, hidden_layers=2)
    if ps.SPECS[kind].norm is not None:
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
        assert product == pytest.approx(explicit, rel=1e-5)  # W_tilde normalized: the product form is exact
        if kind == "psilon-res":
            assert float(ps.path_norm_bound(net, improved=False).detach()) >= original * (1 - 1e-6)
    # the sampled value is a real Lipschitz lower bound: a finite difference never exceeds the bound
    x, y = X[:32], X[32:] + 0.1 * torch.randn(32, 5)
    with torch.no_grad():
        ratio = (net(x) - net(y)).abs().sum(1) / (x - y).abs().amax(1)
    assert float(ratio.max()) <= explicit * (1 + 1e-5)


def test_path_norm_bound_refuses_unnormalized_nets() -> None:
    for kind in ("mlp", "standard", "l1-ib"):  # no normalization, L2, lengths per unit
        with pytest.raises(TypeError, match="PSiLON"):
            ps.path_norm_bound(ps.build(kind, 3, 2, hidden=4))


@pytest.mark.parametrize("kind", ["psilon", "psilon-res", "l1-mlp", "l1-ib", "l2-ob", "standard-res"])
def test_path_norm_bounds_the_sampled_lipschitz_constant_of_trained_nets(kind: str) -> None:
    """Trained nets (a short run of the default recipe on iris) obey the bound too, sparsified ones included."""
    from experiments import datasets as ds

    data = ds.load("iris")
    split = psilon_study.make_split(data, torch.arange(0, 150, 2).numpy(), torch.arange(1, 150, 2).numpy())
    recipe = psilon_study.Recipe(hidden=12, hidden_layers=2, epochs=40, batch_size=32, lr=1e-2)
    net = psilon_study.fit(kind, split, data.task, 1e-3, recipe, seed=0)
    bound = ps.lipschitz_bound(net)
    sampled = ps.sampled_lipschitz(ps.materialize(net), split.X, n=512)
    assert bound >= sampled * (1 - 1e-5) > 0
    if ps.SPECS[kind].reg == "path":
        assert float(ps.path_norm_bound(net).detach()) == pytest.approx(bound, rel=1e-4)
    assert psilon_study.score(net, split, data.task)[0] > 0.6  # it did learn (3 classes)


def _set_weights(net: ps.Net, weights: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, w in zip(net.layers, weights, strict=True):
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
        for layer, mask in zip(net.layers, live, strict=True):
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
    if ps.SPECS[kind].norm is not None:
        _randomize_lengths(net, 0)
    x = torch.randn(20, 5)
    with torch.no_grad():
        reference = net(x)
        torch.testing.assert_close(ps.prune(net, 0.0)(x), reference)  # nothing pruned at tol 0
        tol = 0.05
        pruned = ps.prune(net, tol)
        for w, p in zip(net.weights(), pruned.weights(), strict=True):
            mask = ps.near_zero_mask(w, tol)
            assert torch.equal(p == 0, mask | (w == 0))
            torch.testing.assert_close(p[~mask], w[~mask])
        torch.testing.assert_close(net(x), reference)  # materialize/prune never touch the original
    report = ps.prune_report(net, tol)
    assert report.flops_pruned <= report.flops_dense and 0 <= report.saved <= 1


def test_paper_protocol_is_the_official_budget() -> None:
    cfg = psilon_study.paper_config()
    r = cfg.recipe
    assert (r.hidden, r.hidden_layers + 2, r.epochs, r.batch_size, r.lr, r.loss_mix) == (500, 4, 1000, 400, 2e-3, 0.5)
    grid = cfg.grids["psilon"]
    assert len(grid) == 13 and grid[0] == 5e-5 and grid[-1] == 0.5 and list(grid) == sorted(grid)
    assert all(cfg.grids[m] == grid for m in psilon_study.REGULARIZED)
    deep = cfg.deep
    assert (deep.hidden, deep.hidden_layers + 1, deep.epochs, deep.batch_size, deep.lr) == (500, 10, 400, 200, 2e-2)
    # the default protocol: the same recipe on a smaller budget, its grid a subset of the official one
    default = psilon_study.Config()
    assert set(default.grids["psilon"]) < set(grid) and default.recipe.loss_mix == r.loss_mix
    assert default.recipe.batch_size == r.batch_size and default.recipe.sparsify == r.sparsify


def test_paper_recipe_schedule_loss_mix_and_sparsification_on_a_tiny_run() -> None:
    from experiments import datasets as ds

    data = ds.load("iris")
    split = psilon_study.make_split(data, torch.arange(0, 150, 2).numpy(), torch.arange(1, 150, 2).numpy())
    recipe = replace(psilon_study.PAPER_RECIPE, hidden=6, epochs=20, batch_size=30)  # 75 rows: 3 batches per epoch
    trace = psilon_study.Trace()
    lam = 0.01
    net = psilon_study.fit("psilon", split, data.task, lam, recipe, seed=0, trace=trace)
    assert trace.steps == 20 * 3
    # one-cycle, stepped per epoch: starts at 1e-4, peaks at lr after 20% of the epochs, ends at 1e-7 / lr
    assert trace.lrs[0] == pytest.approx(1e-4)
    assert max(trace.lrs) == pytest.approx(2e-3) and int(np.argmax(trace.lrs)) == 0.2 * 20 - 1
    assert trace.lrs[-1] == pytest.approx(1e-7 / 2e-3, rel=1e-6)
    assert all(a >= b for a, b in itertools.pairwise(trace.lrs[3:]))
    # sparsification: 0 before 50% of the steps, 1 from 80% on
    steps = np.arange(0, 60, 3)  # alpha is traced at the first batch of every epoch
    assert trace.alphas == [psilon_study.sparsify_alpha(int(t), 60, (0.5, 0.8)) for t in steps]
    assert trace.alphas[9] == 0.0 and 0 < trace.alphas[12] < 1 and trace.alphas[-1] == 1.0
    assert ps.exact_zero_fraction(net) > 0.2
    # the loss is 0.5 * loss + 0.5 * lambda * reg, reg the product-form path norm
    out = net(split.X)
    loss, _, penalty = psilon_study.training_loss(net, "psilon", out, split.y, data.task, lam, 0.5)
    expected = 0.5 * torch.nn.functional.cross_entropy(out, split.y) + 0.5 * lam * ps.path_norm_bound(net)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(penalty, lam * ps.path_norm_bound(net))
    # the penalty term is differentiated: its gradient reaches the lengths
    net.zero_grad()
    (0.5 * penalty).backward()
    assert float(net.layers[0].parametrizations["weight"][0].raw_length.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="lr"):
        psilon_study.Recipe(hidden=4, hidden_layers=1, epochs=2, batch_size=8, lr=1e-5)


def test_matched_comparison_picks_the_most_regularized_model_at_the_common_level() -> None:
    def row(model: str, points: list[tuple[float, float, float]]) -> dict:
        grid = [
            {"lam": lam, "test_metric": m, "near_sparsity": lam, "exact_zero": lam / 2, "bound": 1 / lam} for lam, m, _ in points
        ]
        return {"dataset": "d", "fold": 0, "model": model, "task": "classification", "grid": grid}

    rows = [
        row("psilon", [(0.1, 0.95, 0), (0.2, 0.93, 0), (0.4, 0.80, 0)]),
        row("l1-mlp", [(0.1, 0.90, 0), (0.3, 0.92, 0), (0.5, 0.85, 0)]),
    ]
    (pair,) = psilon_study.matched(rows)
    assert pair["level"] == 0.92  # the weaker model's best
    assert pair["lam_a"] == 0.2 and pair["lam_b"] == 0.3  # strongest lambda reaching 0.92
    assert pair["bound_a"] == pytest.approx(5.0) and pair["bound_b"] == pytest.approx(1 / 0.3)
    text = psilon_study.matched_table([pair])
    assert "| d | acc 0.92 |" in text and "0.667×" in text


@pytest.mark.parametrize("name, module", [("psilon", "experiments.psilon_study"), ("l1", "experiments.l1_study")])
def test_registered_as_constrain_study_subcommands(name: str, module: str) -> None:
    import argparse

    from experiments import study_cmd

    parser = argparse.ArgumentParser(prog="constrain")
    study_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study", name, "--quick", "--figures", "somewhere", "--workers", "1"])
    assert args.func.__module__ == module and args.quick and str(args.figures) == "somewhere" and args.workers == 1
