"""dc3 and hardnet-aff: the math on plain tensors against independent computations, the strategies
through the registry (per-sample right-hand sides from the input), and their bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import constrain
import strategies
from constrain import on_output, on_parameter
from strategies._dc3 import Completion, dc3_correct, dc3_soft_penalty
from strategies._hardnet import hardnet_affine, stacked_pseudoinverse


def polyhedron(A=None, b=None, G=None, h=None):
    return constrain.Polyhedron(A=A, b=b, G=G, h=h)


def problem(n=8, m=3, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=torch.float64)
    G = torch.randn(k, n, generator=g, dtype=torch.float64)
    h = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    return A, G, h


# ---------------------------------------------------------------- completion and correction
def test_completion_satisfies_equalities_and_effective_inequalities():
    A, G, h = problem()
    c = Completion.of(A, G)
    z = torch.randn(5, 5, dtype=torch.float64)
    b = torch.randn(5, 3, dtype=torch.float64)
    y = c.complete(z, b)
    assert torch.equal(y[:, :5], z)
    torch.testing.assert_close(y @ A.T, b, atol=1e-12, rtol=0)
    # G y - h written in z alone (independent: numpy solve of the completed block)
    y_np = np.concatenate([z.numpy(), np.linalg.solve(A[:, 5:].numpy(), (b - z @ A[:, :5].T).numpy().T).T], 1)
    np.testing.assert_allclose(y.numpy(), y_np, atol=1e-12)
    torch.testing.assert_close(z @ c.G_eff.T - c.effective_h(h, b), y @ G.T - h, atol=1e-12, rtol=0)


def _dc3_full_space_steps(y, X, A, G, h, free, steps, lr, momentum, other=None):
    """DC3's correction written as its authors do, in the full space of y: the gradient on the free
    variables (all but ``other``; by default the last ``n - free`` are completed), the completed ones
    moved so that A y stays fixed."""
    n = A.shape[1]
    other = np.arange(free, n) if other is None else np.asarray(other)
    partial = np.setdiff1d(np.arange(n), other)
    A_o_inv = np.linalg.inv(A[:, other])
    G_e = G[:, partial] - G[:, other] @ (A_o_inv @ A[:, partial])
    h_e = h - (X @ A_o_inv.T) @ G[:, other].T
    old = 0.0
    for _ in range(steps):
        grad = 2 * np.maximum(y[:, partial] @ G_e.T - h_e, 0) @ G_e
        step = np.zeros_like(y)
        step[:, partial] = grad
        step[:, other] = -(grad @ A[:, partial].T) @ A_o_inv.T
        new = lr * step + momentum * old
        y = y - new
        old = new
    return y


def test_correction_matches_the_full_space_formulation_and_reduces_violation():
    A, G, h = problem(n=10, m=4, k=8, seed=1)
    c = Completion.of(A, G)
    z = 3 * torch.randn(6, 6, dtype=torch.float64)
    b = torch.randn(6, 4, dtype=torch.float64)
    lr = 0.5 / float(torch.linalg.matrix_norm(c.G_eff, 2) ** 2)
    z_new, taken = dc3_correct(z, c.G_eff, c.effective_h(h, b), 20, lr, 0.5)
    assert taken == 20
    y_new = c.complete(z_new, b)
    y_ref = _dc3_full_space_steps(c.complete(z, b).numpy(), b.numpy(), A.numpy(), G.numpy(), h.numpy(), 6, 20, lr, 0.5)
    np.testing.assert_allclose(y_new.numpy(), y_ref, atol=1e-9)
    before = (c.complete(z, b) @ G.T - h).clamp_min(0).square().sum()
    after = (y_new @ G.T - h).clamp_min(0).square().sum()
    assert after < 0.5 * before
    torch.testing.assert_close(y_new @ A.T, b, atol=1e-10, rtol=0)


def test_a_chosen_completed_subset_matches_dc3s_random_subset_formulation():
    """``completed`` = DC3's ``other_vars``: the completion and the unrolled correction agree with DC3's
    full-space formulation on those indices (numpy, independent of our permutation code)."""
    A, G, h = problem(n=10, m=4, k=8, seed=7)
    other = [7, 1, 4, 8]  # any order: the set is what counts
    c = Completion.of(A, G, completed=other)
    partial = np.setdiff1d(np.arange(10), other)
    z = 3 * torch.randn(6, 6, dtype=torch.float64)
    b = torch.randn(6, 4, dtype=torch.float64)
    rows = torch.zeros(6, 10, dtype=torch.float64)
    rows[:, partial] = z
    assert torch.equal(c.free_part(rows), z)
    y = c.complete(z, b)
    assert torch.equal(y[:, partial], z)
    y_np = np.zeros((6, 10))
    y_np[:, partial] = z.numpy()
    y_np[:, np.sort(other)] = np.linalg.solve(A[:, np.sort(other)].numpy(), (b - z @ A[:, partial].T).numpy().T).T
    np.testing.assert_allclose(y.numpy(), y_np, atol=1e-10)
    lr = 0.5 / float(torch.linalg.matrix_norm(c.G_eff, 2) ** 2)
    z_new, _ = dc3_correct(z, c.G_eff, c.effective_h(h, b), 15, lr, 0.5)
    y_ref = _dc3_full_space_steps(y_np, b.numpy(), A.numpy(), G.numpy(), h.numpy(), 6, 15, lr, 0.5, other=np.sort(other))
    np.testing.assert_allclose(c.complete(z_new, b).numpy(), y_ref, atol=1e-9)


def test_completing_the_last_variables_by_name_is_the_default():
    A, G, _ = problem(n=8, m=3, k=4, seed=8)
    named, default = Completion.of(A, G, completed=[5, 6, 7]), Completion.of(A, G)
    assert named.order is None
    torch.testing.assert_close(named.G_eff, default.G_eff, rtol=0, atol=0)


@pytest.mark.parametrize(
    "completed, error, match",
    [
        ([0, 1], ValueError, "3 distinct variable indices"),
        ([0, 0, 1], ValueError, "3 distinct"),
        ([0, 1, 8], ValueError, r"in \[0, 8\)"),
        ([0.5, 1, 2], TypeError, "int variable indices"),
    ],
)
def test_bad_completed_subsets_are_named(completed, error, match):
    A, G, _ = problem(n=8, m=3, k=4, seed=8)
    with pytest.raises(error, match=match):
        Completion.of(A, G, completed=completed)


def test_dc3_with_a_completed_subset_holds_the_equalities():
    A, G, h = problem(n=8, m=3, k=4, seed=9)
    s = strategies.get("dc3", completed=[0, 3, 5], lr=1e-3, steps=3)
    model = s.attach(nn.Linear(3, 8).double(), on_output(polyhedron(A, _rhs_from_input(torch.eye(3, dtype=torch.float64)), G, h)))
    x = torch.randn(9, 3, dtype=torch.float64)
    torch.testing.assert_close(model(x) @ A.T, x, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="no A"):
        strategies.get("dc3", completed=[0]).attach(nn.Linear(3, 8).double(), on_output(polyhedron(G=G, h=h)))


def test_correction_stops_early_at_tolerance():
    G = torch.eye(2, dtype=torch.float64)
    z = torch.tensor([[0.5, 0.2]], dtype=torch.float64)  # already inside z <= 1
    z_new, taken = dc3_correct(z, G, torch.ones(2, dtype=torch.float64), 10, 0.1, 0.5, tol=1e-4)
    assert taken == 0 and torch.equal(z_new, z)


def test_soft_penalty_is_dc3s_loss():
    A, G, h = problem()
    y = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64)
    value = dc3_soft_penalty(y, A, b, G, h, 10.0, 0.3)
    ineq = np.linalg.norm(np.maximum(y.detach().numpy() @ G.numpy().T - h.numpy(), 0), axis=1)
    eq = np.linalg.norm(y.detach().numpy() @ A.numpy().T - b.numpy(), axis=1)
    assert float(value.detach()) == pytest.approx(np.mean(10 * 0.7 * ineq + 10 * 0.3 * eq), rel=1e-12)
    feasible = torch.zeros(2, 8, dtype=torch.float64, requires_grad=True)
    dc3_soft_penalty(feasible, None, None, G, h, 10.0, 0.5).backward()  # norm at zero: gradient 0, not NaN
    assert torch.equal(feasible.grad, torch.zeros_like(feasible))


# ---------------------------------------------------------------- hardnet-aff on tensors
def test_hardnet_affine_lands_in_the_set_and_keeps_satisfied_rows():
    A, G, h = problem(n=8, m=3, k=5, seed=2)
    pinv = stacked_pseudoinverse(A, G, 8)
    f = 100 * torch.randn(50, 8, dtype=torch.float64)  # far from any training range
    b = 100 * torch.randn(50, 3, dtype=torch.float64)
    y = hardnet_affine(f, pinv, A, b, G, h)
    assert float((y @ A.T - b).abs().max()) <= 1e-9
    torch.testing.assert_close(y @ G.T, torch.minimum(f @ G.T, h.expand(50, -1)), atol=1e-9, rtol=0)


def test_hardnet_affine_gradcheck():
    A, G, h = problem(n=6, m=2, k=3, seed=3)
    pinv = stacked_pseudoinverse(A, G, 6)
    f = torch.randn(4, 6, dtype=torch.float64)
    f = f + 0.1 * torch.sign(f @ G.T - h) @ torch.linalg.pinv(G).T  # away from the kinks G f = h
    f.requires_grad_(True)
    b = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, b: hardnet_affine(f, pinv, A, b, G, h), (f, b))


@pytest.mark.parametrize("rows", ["too-many", "dependent"])
def test_hardnet_refuses_rank_deficient_stacks(rows):
    A, G, h = problem(n=4, m=2, k=3)
    if rows == "dependent":
        G = torch.cat([A[:1] * 2.0, G[:1]])
    with pytest.raises(ValueError, match="full row rank"):
        stacked_pseudoinverse(A, G, 4)
    model = nn.Linear(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="full row rank"):
        strategies.get("hardnet-aff").attach(
            model, on_output(polyhedron(A, torch.zeros(2, dtype=torch.float64), G, torch.ones(G.shape[0], dtype=torch.float64)))
        )


# ---------------------------------------------------------------- the strategies
def _rhs_from_input(A_x):
    return lambda x: x @ A_x.T


@pytest.mark.parametrize("name", ["dc3", "hardnet-aff"])
def test_strategies_hold_equalities_from_the_input_and_train(name):
    torch.manual_seed(0)
    n, m, k, d = 8, 3, 4, 5
    A, G, h = problem(n, m, k, seed=4)
    A_x = torch.randn(m, d, dtype=torch.float64)
    target = on_output(polyhedron(A, _rhs_from_input(A_x), G, h))
    model = nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, n)).double()
    options = {"lr": 1e-3, "steps": 5} if name == "dc3" else {}
    s = strategies.get(name, **options)
    model = s.attach(model, [target])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    c = torch.randn(n, dtype=torch.float64)
    for _ in range(30):
        x = torch.randn(32, d, dtype=torch.float64)
        out = model(x)
        loss = s.loss((out @ c).mean(), out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        s.after_step()
    model.eval()
    x = 50 * torch.randn(64, d, dtype=torch.float64)  # far outside the training range
    y = model(x).detach()
    assert float((y @ A.T - x @ A_x.T).abs().max()) <= 1e-9
    if name == "hardnet-aff":
        assert float((y @ G.T - h).max()) <= 1e-9


def test_dc3_loss_adds_the_soft_penalty_of_the_last_forward():
    n, m, k, d = 8, 3, 4, 5
    A, G, h = problem(n, m, k, seed=5)
    A_x = torch.randn(m, d, dtype=torch.float64)
    s = strategies.get("dc3", weight=4.0, eq_fraction=0.25, steps=0)
    model = s.attach(nn.Linear(d, n).double(), on_output(polyhedron(A, _rhs_from_input(A_x), G, h)))
    x = torch.randn(7, d, dtype=torch.float64)
    out = model(x)
    objective = out.sum() * 0
    expected = 4.0 * 0.75 * np.linalg.norm(np.maximum(out.detach().numpy() @ G.numpy().T - h.numpy(), 0), axis=1)
    assert float(s.loss(objective, out).detach()) == pytest.approx(expected.mean(), rel=1e-6, abs=1e-9)


def test_dc3_eval_stops_early_and_training_unrolls_all_steps():
    n, m, k = 6, 2, 3
    A, G, h = problem(n, m, k, seed=6)
    s = strategies.get("dc3", steps=7, lr=1e-3, tol=1e9)  # every batch is "converged" in evaluation
    model = s.attach(nn.Linear(4, n).double(), on_output(polyhedron(A, torch.zeros(m, dtype=torch.float64), G, h)))
    model(torch.randn(3, 4, dtype=torch.float64))
    assert s.last_correction_steps == 7
    model.eval()
    model(torch.randn(3, 4, dtype=torch.float64))
    assert s.last_correction_steps == 0


# ---------------------------------------------------------------- bad input
def test_bad_options_and_targets():
    with pytest.raises(ValueError, match="steps"):
        strategies.get("dc3", steps=-1)
    with pytest.raises(ValueError, match="momentum"):
        strategies.get("dc3", momentum=1.5)
    with pytest.raises(TypeError, match="no option"):
        strategies.get("hardnet-aff", lr=1.0)
    model = nn.Linear(3, 4)
    for name in ("dc3", "hardnet-aff"):
        with pytest.raises(strategies.UnsupportedConstraint, match="parameters"):
            strategies.get(name).attach(model, on_parameter("weight", constrain.NonNegative()))
        with pytest.raises(strategies.UnsupportedConstraint, match="Polyhedron"):
            strategies.get(name).attach(model, on_output(constrain.L1Ball(1.0)))


def test_dc3_refuses_a_singular_completed_block():
    A = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)  # last two columns zero
    with pytest.raises(ValueError, match="singular block.*give completed"):
        strategies.get("dc3").attach(nn.Linear(3, 4).double(), on_output(polyhedron(A, torch.zeros(2, dtype=torch.float64))))


def test_callable_rhs_with_the_wrong_shape_is_named():
    A, G, h = problem(n=6, m=2, k=3)
    model = strategies.get("hardnet-aff").attach(nn.Linear(4, 6).double(), on_output(polyhedron(A, lambda x: x[:, :3], G, h)))
    with pytest.raises(ValueError, match=r"b\(inputs\) has shape \(5, 3\)"):
        model(torch.randn(5, 4, dtype=torch.float64))


def test_outputs_of_the_wrong_width_and_nonfinite_bounds():
    A, G, h = problem(n=6, m=2, k=3)
    model = strategies.get("dc3").attach(nn.Linear(4, 5).double(), on_output(polyhedron(A, torch.zeros(2).double(), G, h)))
    with pytest.raises(ValueError, match="5 entries per row but the polyhedron has 6"):
        model(torch.randn(2, 4, dtype=torch.float64))
    strategy = strategies.get("hardnet-aff")  # a callable bound that turns NaN on some input
    model = strategy.attach(
        nn.Linear(4, 6).double(), on_output(polyhedron(A, torch.zeros(2).double(), G, lambda x: h * x[:, :1] / x[:, :1]))
    )
    x = torch.randn(2, 4, dtype=torch.float64)
    x[1, 0] = 0.0
    out = model(x)  # the NaN flows to the strategy's non-finite check (on_nonfinite, as for every strategy)
    with pytest.raises(FloatingPointError, match="NaN or Inf|not finite"):
        strategy.loss(out.square().sum(), out)
