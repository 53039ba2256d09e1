"""The L1-regularization study: strategies by name, the quick run end to end, and what it must show."""

from __future__ import annotations

import json

import pytest
import torch

import strategies
from experiments import l1_study
from experiments import psilon as ps


@pytest.mark.parametrize("method", l1_study.STRATEGIES)
def test_each_method_is_the_registered_strategy(method: str) -> None:
    cfg = l1_study.Config(strength=2e-3, lr=0.1)
    strategy = l1_study.strategy_for(method, cfg)
    assert type(strategy) is strategies.strategy_class(method)
    assert strategy.strength == 2e-3 and strategy.lr == 0.1
    net = ps.build("mlp", 4, 3, hidden=5)
    strategy.attach(net, l1_study.targets(net))  # every weight matrix, biases free
    assert [t.names for t in strategy.targets] == [("layers.0.weight",), ("layers.1.weight",), ("layers.2.weight",)]
    assert l1_study.strategy_for("none", cfg) is None


def test_sparsity_counts_exact_and_small_weights() -> None:
    net = ps.Net(2, 2, 1, hidden_layers=0)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[0.0, 5e-4], [1.0, -2e-3]]))
        net.layers[1].weight.copy_(torch.tensor([[0.0, 1.0]]))
    exact, small = l1_study.sparsity(net, 1e-3)
    assert exact == pytest.approx(2 / 6) and small == pytest.approx(3 / 6)


def test_quick_study_end_to_end(tmp_path) -> None:
    status = l1_study.main(["--quick", "--figures", str(tmp_path), "--out", str(tmp_path), "--no-progress"])
    assert status == 0
    text = (tmp_path / "l1.md").read_text()
    for method in l1_study.METHODS:
        assert text.count(f"| {method} |") == 2  # iris and diabetes
    for name in ("l1_sparsity.png", "l1_magnitudes.png"):
        assert (tmp_path / name).stat().st_size > 1000
    rows = json.loads((tmp_path / "l1.json").read_text())["rows"]
    by = {(r["dataset"], r["method"]): r for r in rows}
    for dataset in ("iris", "diabetes"):
        # the point of the study: plain subgradient steps (in the loss or as a separate sign step) leave
        # no exact zeros, while the thresholding implementations do
        assert by[(dataset, "none")]["exact_zero"] == 0
        assert by[(dataset, "l1-subgradient")]["exact_zero"] == 0
        assert by[(dataset, "l1-sign-step")]["exact_zero"] == 0
        for method in ("l1-proximal", "l1-truncated", "l1-cumulative"):
            assert by[(dataset, method)]["exact_zero"] > 0, method
        for r in (by[(dataset, m)] for m in l1_study.METHODS):
            assert r["trace"][0][0] == 0 and r["trace"][-1][0] == 300
            assert r["below_small"] >= r["exact_zero"]
