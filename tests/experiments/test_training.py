"""The one training loop of the experiments (experiments._training) and the catalogue of constraint kinds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import strategies
from constrain import L1Ball, NonNegative, ParameterTarget, on_parameter
from experiments import catalogue
from experiments._training import Batch, full_batches, reshuffled_batches, shrink_follows_lr, train, train_step


def _data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g)


def _mse(out: torch.Tensor, batch: Batch) -> torch.Tensor:
    assert batch.targets is not None
    return nn.functional.mse_loss(out, batch.targets)


def _model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def test_train_matches_a_hand_written_loop_with_a_strategy_and_a_schedule() -> None:
    X, Y = _data()
    schedule = [0.1 * 0.9**t for t in range(7)]
    ours = _model()
    strategy = strategies.get("projected", metric="euclidean")
    strategy.attach(ours, [on_parameter("weight", NonNegative())])
    result = train(
        ours,
        torch.optim.SGD(ours.parameters(), lr=1.0),
        _mse,
        full_batches(X, Y),
        7,
        strategy=strategy,
        lr=schedule.__getitem__,
    )
    hand = _model()
    with torch.no_grad():
        hand.weight.clamp_(min=0)  # attach starts from the projection of the initial weights
    opt = torch.optim.SGD(hand.parameters(), lr=1.0)
    for t in range(7):
        opt.param_groups[0]["lr"] = schedule[t]
        loss = nn.functional.mse_loss(hand(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            hand.weight.clamp_(min=0)  # the Euclidean projection onto w >= 0
    assert result.steps == 7 and result.stopped is None and result.error is None
    assert torch.allclose(ours.weight, hand.weight, atol=1e-6) and torch.allclose(ours.bias, hand.bias, atol=1e-6)
    assert strategy.steps == 7
    assert result.loss is not None and not result.loss.requires_grad
    assert result.wall > 0 and result.cpu >= 0


class _CountingSGD(torch.optim.SGD):
    """SGD that zeroes gradients in place (``set_to_none`` ignored) and counts its ``zero_grad`` calls."""

    calls = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        type(self).calls += 1
        super().zero_grad(set_to_none=False)


def test_gradients_are_cleared_every_step_and_an_optimizers_own_zero_grad_is_kept() -> None:
    """Plain optimizers: the gradients of one step are gone before the next backward (set to None, as
    ``zero_grad(set_to_none=True)``: no accumulation, the hand-written loop of SGD); an optimizer class that
    overrides ``zero_grad`` has it called once per step, in :func:`train` and in :func:`train_step` alike."""
    X, Y = _data()
    plain, own, hand = _model(), _model(), _model()
    seen: list[bool] = []
    plain.weight.register_hook(lambda grad: seen.append(plain.weight.grad is None))
    train(plain, torch.optim.SGD(plain.parameters(), lr=0.1), _mse, full_batches(X, Y), 4)
    _CountingSGD.calls = 0
    train(own, _CountingSGD(own.parameters(), lr=0.1), _mse, full_batches(X, Y), 4)
    for _ in range(4):
        hand.zero_grad()
        nn.functional.mse_loss(hand(X), Y).backward()
        with torch.no_grad():
            for p in hand.parameters():
                assert p.grad is not None
                p.sub_(0.1 * p.grad)
    assert seen == [True] * 4  # cleared before every backward, the first one included
    assert _CountingSGD.calls == 4
    _CountingSGD.calls = 0
    stepped = _model()
    train_step(stepped, _CountingSGD(stepped.parameters(), lr=0.1), _mse, Batch(X, Y))
    assert _CountingSGD.calls == 1  # a benchmarked step keeps an optimizer's own zero_grad too
    assert own.weight.grad is not None and plain.weight.grad is not None  # the last step's gradients are kept
    for model in (plain, own):
        assert torch.allclose(model.weight, hand.weight, atol=1e-6) and torch.allclose(model.bias, hand.bias, atol=1e-6)


def test_logging_early_stop_and_the_lazily_built_optimizer() -> None:
    X, Y = _data()
    model = _model()
    logged: list[tuple[int, int]] = []
    built: list[int] = []

    def make() -> torch.optim.Optimizer:
        built.append(len(logged))
        return torch.optim.SGD(model.parameters(), lr=0.05)

    result = train(
        model,
        make,
        _mse,
        full_batches(X, Y),
        100,
        log_at={0, 2, 5, 50},
        on_log=lambda t, progress: logged.append((t, progress.steps)),
        stop_when=lambda t, progress: "enough" if t == 5 else None,
    )
    assert result.steps == 5 and result.stopped == "enough"
    assert logged == [(0, 0), (2, 2), (5, 5)]  # step 0 logged before the optimizer exists
    assert built == [1] and result.optimizer is not None


def test_non_finite_loss_raises_or_is_recorded() -> None:
    X, Y = _data()
    Y[0, 0] = float("nan")
    model = _model()
    with pytest.raises(FloatingPointError, match="not finite at step 0"):
        train(model, torch.optim.SGD(model.parameters(), lr=0.1), _mse, full_batches(X, Y), 3, check_finite=True)
    result = train(
        model, torch.optim.SGD(model.parameters(), lr=0.1), _mse, full_batches(X, Y), 3, check_finite=True, record_errors=True
    )
    assert result.stopped == "error" and isinstance(result.error, FloatingPointError) and result.steps == 0
    assert "FloatingPointError" in result.traceback
    with pytest.raises(ValueError, match="steps"):
        train(model, torch.optim.SGD(model.parameters(), lr=0.1), _mse, full_batches(X, Y), -1)


def test_follow_lr_gets_the_scheduled_rate_and_shrink_follows_lr_sets_it() -> None:
    X, Y = _data()
    model = _model()
    strategy = strategies.get("l1-proximal", strength=0.1, lr=1.0)
    strategy.attach(model, [on_parameter("weight", L1Ball(1.0))])
    seen: list[float] = []

    def follow(lr: float) -> None:
        seen.append(lr)
        shrink_follows_lr(strategy, lr)

    train(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        _mse,
        full_batches(X, Y),
        3,
        strategy=strategy,
        lr=lambda t: 0.1 / (t + 1),
        follow_lr=follow,
    )
    assert seen == [0.1, 0.05, 0.1 / 3]
    assert isinstance(strategy, strategies.L1Regularization) and strategy.lr == pytest.approx(0.1 / 3)
    with pytest.raises(TypeError, match="L1-regularization"):
        shrink_follows_lr(strategies.get("projected"), 0.1)


def test_reshuffled_batches_cover_the_data_before_a_reshuffle() -> None:
    X, Y = _data(10)
    batches = reshuffled_batches(X, Y, 3, torch.Generator().manual_seed(1))
    first = [next(batches) for _ in range(3)]  # 9 of 10 rows, then a new order (the short rest is dropped)
    ids = torch.cat([b.sample_ids for b in first if b.sample_ids is not None])
    assert len(set(ids.tolist())) == 9
    for b in first:
        assert b.sample_ids is not None
        assert torch.equal(b.inputs, X[b.sample_ids]) and b.targets is not None and torch.equal(b.targets, Y[b.sample_ids])
    assert next(reshuffled_batches(X, None, 3, torch.Generator(), sample_ids=False)).sample_ids is None
    with pytest.raises(ValueError, match="size"):
        next(reshuffled_batches(X, Y, 11, torch.Generator()))


def test_train_step_is_one_step() -> None:
    X, Y = _data()
    model, hand = _model(), _model()
    loss = train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), _mse, Batch(X, Y))
    expected = nn.functional.mse_loss(hand(X), Y)
    expected.backward()
    assert torch.allclose(loss, expected)
    with torch.no_grad():
        assert torch.allclose(model.weight, hand.weight - 0.1 * hand.weight.grad)


def test_the_catalogue_is_the_one_list_of_kinds() -> None:
    from experiments import bench_strategies, listing, problems

    keys = [k.key for k in catalogue.KINDS_CATALOGUE]
    labels = [k.label for k in catalogue.KINDS_CATALOGUE]
    assert len(set(keys)) == len(keys) and len(set(labels)) == len(labels)
    assert list(listing.CONSTRAINTS) == labels
    assert set(problems.KINDS) <= set(keys) and {problems.get_problem(name).kind for name in problems.PROBLEMS} <= set(
        problems.KINDS
    )
    assert list(bench_strategies.CONSTRAINTS) == [catalogue.label(k) for k in catalogue.STUDY_KINDS]
    for kind in catalogue.KINDS_CATALOGUE:
        target = catalogue.example_target(kind.key, "fc.weight", (4, 4))
        assert isinstance(target, ParameterTarget) == kind.on_weight
    tie = catalogue.example_target("weight-affine", "fc.weight", (16, 16))
    w = torch.zeros(16, 16)
    w.diagonal()[:8] = 3.0  # the first 8 diagonal entries equal: on the tie
    assert float(tie.set.violation(w.reshape(1, -1)).max()) == pytest.approx(0.0, abs=1e-6)
    w[7, 7] = 1.0  # the eighth differs: off the tie
    assert float(tie.set.violation(w.reshape(1, -1)).max()) > 0.5
    with pytest.raises(KeyError, match="output-l1"):
        catalogue.kind("bogus")


def test_study_entries_with_run_values_pickle_for_worker_processes() -> None:
    import pickle

    from experiments import study
    from experiments.problems import get_problem

    problem = get_problem("lin-weight-l1")
    for entry in study.ENTRIES:
        copy = pickle.loads(pickle.dumps(entry))
        assert study.resolve_options(copy, problem) == study.resolve_options(entry, problem)
        assert copy.options_text() == entry.options_text() and copy.stored_options() == entry.stored_options()
    l1 = next(e for e in study.ENTRIES if e.label == "l1-proximal")
    assert study.resolve_options(l1, problem)["lr"] == problem.lr and l1.stored_options()["lr"] == "@lr"
