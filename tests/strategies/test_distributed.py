"""Strategies under torch.distributed: 2 CPU processes (gloo) with DistributedDataParallel.

Each rank trains on its half of a 16-sample global batch (DistributedSampler's interleaved shard);
one process trains on the whole batch. Every rank must end with the same multipliers and weights,
bit for bit, and those must equal the single process's up to rounding (float64). The default run
checks at least one strategy of every family (shared and per-sample Lagrangian multipliers, the
augmented and slack forms, projections, a reparameterization, a penalty, a barrier, an L1
implementation) and a step skipped on every rank for a NaN on one; the slow run covers every other
strategy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import ddp_cases
import pytest
import torch

import strategies

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)

TOL = 1e-12


def _nonempty(state: dict) -> dict:
    return {k: v for k, v in state.items() if v.numel()}


def _check(name: str, ranks: list[dict]) -> None:
    case = ddp_cases.ALL_CASES[name]
    single = ddp_cases.train(case, torch.arange(ddp_cases.GLOBAL_BATCH))
    first = ranks[0][name]
    for other in ranks[1:]:  # identical on every rank, bit for bit
        for key, value in first["parameters"].items():
            assert torch.equal(value, other[name]["parameters"][key]), f"{name}: {key} differs between ranks"
        lam, lam_other = first["strategy"].get("multipliers", {}), other[name]["strategy"].get("multipliers", {})
        assert lam.keys() == lam_other.keys()
        for key in lam:
            assert torch.equal(lam[key], lam_other[key]), f"{name}: multipliers {key} differ between ranks"
    for key, value in _nonempty(single["parameters"]).items():  # as one process on the global batch
        if value.is_floating_point():
            torch.testing.assert_close(first["parameters"][key], value, rtol=0, atol=TOL, msg=f"{name}: {key}")
        else:
            assert torch.equal(first["parameters"][key], value), f"{name}: {key}"
    for key, value in single["strategy"].get("multipliers", {}).items():
        torch.testing.assert_close(
            first["strategy"]["multipliers"][key], value, rtol=0, atol=TOL, msg=f"{name}: multipliers {key}"
        )
        if key.endswith(":inequality"):
            assert bool((value >= 0).all())
    torch.testing.assert_close(first["outputs"], single["outputs"], rtol=0, atol=TOL)
    assert first["skipped"] == single["skipped"] == (1 if case.nan_at is not None else 0)
    assert first["strategy"]["steps"] == ddp_cases.STEPS


@pytest.fixture(scope="module")
def default_ranks(tmp_path_factory) -> list[dict]:
    return ddp_cases.run_distributed(list(ddp_cases.CASES), str(tmp_path_factory.mktemp("ddp")))


@pytest.mark.parametrize("name", list(ddp_cases.CASES))
def test_two_ranks_agree_with_each_other_and_with_one_process(default_ranks: list[dict], name: str) -> None:
    _check(name, default_ranks)


def test_the_cases_cover_every_registered_strategy() -> None:
    covered = {case.strategy for case in ddp_cases.ALL_CASES.values()}
    assert covered == {
        n for n in strategies.available() if strategies.strategy_class(n).__module__.startswith("strategies.")
    }  # not the ones tests register


def test_the_default_cases_cover_every_family() -> None:
    families = {
        strategies.strategy_class(n).family
        for n in strategies.available()
        if strategies.strategy_class(n).__module__.startswith("strategies.")
    }
    assert {strategies.strategy_class(case.strategy).family for case in ddp_cases.CASES.values()} == families


@pytest.mark.slow
def test_every_other_strategy_under_ddp(tmp_path) -> None:
    ranks = ddp_cases.run_distributed(list(ddp_cases.MORE_CASES), str(tmp_path))
    for name in ddp_cases.MORE_CASES:
        _check(name, ranks)


def test_without_a_process_group_the_collectives_are_no_ops() -> None:
    from strategies import _distributed

    assert not _distributed.active() and _distributed.all_true(False) is False
    t = torch.ones(3)
    assert _distributed.global_mean(t) is t
    ids, values = _distributed.all_gather_rows(torch.arange(2), torch.ones(2, 1))
    assert ids.tolist() == [0, 1] and values.shape == (2, 1)


# ----------------------------------------------------------------------------- the torchrun example
ROOT = Path(__file__).resolve().parents[2]


def test_the_ddp_example_runs_in_one_process(capsys) -> None:
    from experiments import ddp_example

    ddp_example.main(["--epochs", "1", "--samples", "64", "--batch-size", "16"])
    assert "1 process(es), strategy 'lagrangian': weights and multipliers identical" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["lagrangian", "projected", "slack-lagrangian"])
def test_the_ddp_example_under_torchrun(strategy: str, tmp_path) -> None:
    torchrun = shutil.which("torchrun")
    command = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    done = subprocess.run(
        [
            *command,
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "experiments" / "ddp_example.py"),
            "--strategy",
            strategy,
            "--epochs",
            "2",
            "--samples",
            "128",
            "--checkpoint",
            str(tmp_path / "ckpt.pt"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"2 process(es), strategy {strategy!r}: weights and multipliers identical on every rank" in done.stdout
    assert (tmp_path / "ckpt.pt").exists()
