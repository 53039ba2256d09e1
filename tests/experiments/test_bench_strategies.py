"""``constrain bench strategies`` end to end on tiny sizes: the tables, the JSON, every cell ran.

No timing is asserted (benchmarks are not timed tests). The Cooper comparison needs
``cooper-optim`` (in the ``test`` extra): without it the test is skipped with its reason shown
(``-rs``), and fails when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

import strategies
from experiments import bench_strategies as bs
from experiments.cli import main


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems: one thread (extra threads only add synchronisation on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = ["--width", "8", "--batch", "8", "--steps", "1", "--rounds", "2", "--cooper-steps", "6", "--cooper-block", "3"]


def test_cells_cover_every_family_and_are_registered() -> None:
    families = {cell.family for cell in bs.CELLS}
    shipped = [strategies.strategy_class(name) for name in strategies.available()]
    # (strategies registered by other tests, outside the package, do not count)
    assert families == {cls.family for cls in shipped if cls.__module__.startswith("strategies.")}
    for cell in bs.CELLS:
        assert strategies.strategy_class(cell.strategy).family == cell.family
        assert cell.constraint in bs.CONSTRAINTS
    assert any(cell.per_sample and cell.limit == bs.TARGET_PER_SAMPLE_RATIO for cell in bs.CELLS)
    labels = [(cell.label, cell.constraint) for cell in bs.CELLS]
    assert len(labels) == len(set(labels))


def _check_overhead(overhead: dict, cells) -> None:
    records = overhead["cells"]
    assert [(r["label"], r["constraint"]) for r in records] == [(c.label, c.constraint) for c in cells]
    for rec in records:
        assert rec["median_ms"] > 0 and rec["reference_median_ms"] > 0 and rec["ratio"] > 0
        assert rec["ratio_q25"] <= rec["ratio_q75"]
        assert rec["met"] == (rec["ratio"] <= rec["target"])
        assert rec["steps_taken"] >= 2  # warm-up and timed steps went through strategy.after_step


def test_cli_prints_tables_and_writes_json(tmp_path, capsys) -> None:
    torch.set_num_threads(2)
    path = tmp_path / "strategies.json"
    assert main(["bench", "strategies", *TINY, "--json", str(path)]) == 0
    assert torch.get_num_threads() == 2  # restored
    printed = capsys.readouterr().out
    payload = json.loads(path.read_text())
    assert payload["benchmark"] == "strategies" and payload["environment"]["threads"] == 1
    assert payload["config"]["sizes"]["width"] == 8
    _check_overhead(payload["overhead"], bs.CELLS)
    for cell in bs.CELLS:  # one table row per cell
        assert any(cell.label in line and cell.constraint in line for line in printed.splitlines())
    cooper = payload["cooper"]
    names = set(cooper["contenders"])
    assert {"plain Adam", "ours (lagrangian)", bs.HAND_WRITTEN} <= names
    assert cooper["ours_over_hand_written"] > 0 and f"ours / {bs.HAND_WRITTEN}" in printed
    for result in cooper["contenders"].values():
        assert result["steps"] == 6 and result["final_mean_violation"] >= 0
    if bs.cooper_available():
        assert "Cooper" in names and "ours / Cooper" in printed and cooper["skipped"] is None
    else:
        assert "Cooper" not in names and "cooper-optim is not installed" in printed


def test_no_cooper_and_selection(capsys) -> None:
    assert main(["bench", "strategies", *TINY, "--no-cooper", "--only", "lagrangian"]) == 0
    printed = capsys.readouterr().out
    assert "ours / Cooper" not in printed and "Cooper not run" in printed
    assert "l1-proximal" not in printed and "lagrangian (per-sample)" in printed
    with pytest.raises(ValueError, match="no benchmark cell matches"):
        bs.select_cells(["no-such-strategy"])


def _require_cooper() -> None:
    if not bs.cooper_available():
        message = "cooper-optim is not installed (pip install -e '.[test]'): the comparison with Cooper did not run"
        if os.environ.get("CI"):  # CI installs the test extra: a missing comparison is an error there
            pytest.fail(message)
        pytest.skip(message)


#: Width 16, batch 64: some initial outputs are positive, where the mean of g and the mean violation differ (at
#: width 8, batch 32 every output stays negative for 40 steps and the two constraints take the same steps).
COOPER_TEST_SIZES = {"width": 16, "batch": 64}


def test_cooper_matches_ours_step_for_step() -> None:
    """Same mathematics, same minibatches, same initial weights: the same trajectory."""
    _require_cooper()
    record = bs.bench_cooper(steps=40, block=10, sizes=COOPER_TEST_SIZES)
    ours, theirs = record["contenders"]["ours (lagrangian)"], record["contenders"]["Cooper"]
    assert ours["final_multiplier"] > 0  # the constraint binds
    assert ours["final_multiplier"] == pytest.approx(theirs["final_multiplier"], rel=1e-5, abs=1e-7)
    assert ours["final_mean_output"] == pytest.approx(theirs["final_mean_output"], rel=1e-5, abs=1e-7)
    assert ours["final_fraction_negative"] == theirs["final_fraction_negative"]
    assert record["ours_over_cooper"] > 0 and record["met"] == (record["ours_over_cooper"] <= bs.TARGET_COOPER_RATIO)


def test_the_hand_written_step_takes_bitwise_our_steps() -> None:
    """The hand-written contender is the same algorithm as ours with the same operations in the same order: after
    40 steps on the bench's minibatches the multiplier and every output are bitwise equal (not merely close); the
    table prints its row and its ratios, the record holds them. Needs no Cooper."""
    sizes = {**bs.COOPER_SIZES, **COOPER_TEST_SIZES}
    X, Y, batches = bs._cooper_data(sizes, 40, 0, torch.device("cpu"))
    torch.manual_seed(0)
    base = bs.mlp(sizes["d_in"], sizes["width"], sizes["hidden_layers"], sizes["d_out"])
    runs = {}
    for name, build in (("ours", bs._ours_contender), ("hand", bs._hand_written_contender)):
        model = copy.deepcopy(base)
        contender = bs._Contender(model, *build(model, bs.DUAL_LR))
        contender.run_block(X, Y, batches, 40, lambda: None)
        with torch.no_grad():
            runs[name] = (contender.multiplier(), model(X))
    (lam_ours, out_ours), (lam_hand, out_hand) = runs["ours"], runs["hand"]
    assert lam_ours > 0 and lam_ours == lam_hand  # the constraint binds; bitwise the same multiplier
    assert torch.equal(out_ours, out_hand)
    with torch.no_grad():
        assert bool((base(X) > 0).any())  # some outputs start positive: the mean of g, not the mean violation
    record = bs.bench_cooper(steps=6, block=3, sizes=COOPER_TEST_SIZES, include_cooper=False)
    assert record["contenders"][bs.HAND_WRITTEN]["steps"] == 6
    for key in ("hand_written_over_plain", "ours_over_hand_written"):
        assert record[key] > 0
    table = bs.format_cooper_table(record).splitlines()
    assert any(line.startswith(bs.HAND_WRITTEN + " ") for line in table)  # its row
    assert any(f"ours / {bs.HAND_WRITTEN} {record['ours_over_hand_written']:.3f}x" in line for line in table)


def test_the_hand_written_step_refuses_a_non_finite_loss() -> None:
    """Its finiteness check is real: a NaN input raises before anything moves."""
    model = bs.mlp(3, 4, 2, 1)
    step, multiplier = bs._hand_written_contender(model, bs.DUAL_LR)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(FloatingPointError, match="not finite"):
        step(torch.full((5, 3), float("nan")), torch.zeros(5, 1))
    assert multiplier() == 0.0 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_comparison_tells_the_mean_violation_from_the_mean(monkeypatch) -> None:
    """The test above can fail: ours on the mean violation (``multipliers="shared"``, another constraint) parts
    from Cooper's mean-of-g trajectory on the same run (the bench's comparison before this was fixed)."""
    _require_cooper()
    get = strategies.get
    monkeypatch.setattr(bs.strategies, "get", lambda name, **kw: get(name, **{**kw, "multipliers": "shared"}))
    record = bs.bench_cooper(steps=40, block=10, sizes=COOPER_TEST_SIZES)
    ours, theirs = record["contenders"]["ours (lagrangian)"], record["contenders"]["Cooper"]
    assert abs(ours["final_multiplier"] - theirs["final_multiplier"]) > 1e-3 * theirs["final_multiplier"]


def test_a_weight_read_twice_is_mapped_once_per_forward(monkeypatch) -> None:
    """The fc2-twice cell: reparameterizations run the forward in ``parametrize.cached()``."""
    from torch.nn.utils import parametrize

    from strategies._reparam import SoftplusNonNegative

    calls = []
    original = SoftplusNonNegative.forward
    monkeypatch.setattr(SoftplusNonNegative, "forward", lambda self, v: calls.append(1) or original(self, v))
    cell = next(c for c in bs.CELLS if c.model == "fc2-twice")
    torch.manual_seed(0)
    base = bs.mlp(6, 6, 3, 2, fc2_twice=True)
    x, y = torch.randn(4, 6), torch.randn(4, 2)
    step, strategy = bs._build_cell(cell, base, x, y, 6)
    calls.clear()
    step()
    assert len(calls) == 1 and strategy.steps == 1
    assert not parametrize._cache_enabled and not parametrize._cache  # left clean after the forward


def test_check_exits_one_when_a_target_misses(monkeypatch, capsys) -> None:
    """``--check``: status 1 when a cell misses its target (here made impossible); the machine line comes first."""
    import dataclasses

    monkeypatch.setattr(bs, "CELLS", [dataclasses.replace(cell, limit=1e-9) for cell in bs.CELLS])
    argv = ["bench", "strategies", *TINY, "--no-cooper", "--only", "lagrangian (shared)"]
    assert main(argv) == 0  # reported only
    assert main([*argv, "--check"]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("machine: ") and "MISS" in printed
