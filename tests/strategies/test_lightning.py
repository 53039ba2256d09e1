"""``strategies.lightning.ConstraintCallback`` on a real ``lightning.Trainer`` (CPU, a few steps).

- ``projected``: the outputs hold on unseen inputs, the constrained weights are feasible, the
  strategy took one ``after_step`` per optimizer step (none on accumulation-only batches), and
  the violations are logged as metrics.
- ``lagrangian``: training N steps, checkpointing, and resuming with a new module, callback and
  trainer to 2N steps gives the same parameters and multipliers, bit for bit, as 2N uninterrupted
  steps; the multipliers restored from the checkpoint are the saved ones (and not zero).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from constrain import L1Ball, NonNegative, on_output, on_parameter

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning", "ignore:.*LeafSpec.*:DeprecationWarning"
)


@pytest.fixture(scope="module")
def lit() -> SimpleNamespace:
    """Lightning, the callback and a plain LightningModule, imported when a test of this module runs: importing
    Lightning costs about 7 CPU-seconds, which every xdist worker would otherwise pay while collecting."""
    pl = pytest.importorskip(
        "lightning.pytorch", reason="the Lightning integration needs the optional extra constrain[lightning]"
    )
    from strategies.lightning import ConstraintCallback

    class Regressor(pl.LightningModule):
        """A plain LightningModule: the only concession to the callback is returning the outputs."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            out = self(x)
            return {"loss": torch.nn.functional.mse_loss(out, y), "outputs": out}

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return SimpleNamespace(pl=pl, ConstraintCallback=ConstraintCallback, Regressor=Regressor)


def _data(n: int = 64, batch_size: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = 2 * torch.rand(n, 3, generator=g)  # targets outside the unit L1 ball: the constraint is active
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def _trainer(lit: SimpleNamespace, tmp_path, max_steps: int, **options):
    return lit.pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **options,
    )


def test_projected_holds_after_fit_and_logs_the_violations(lit, tmp_path) -> None:
    model = lit.Regressor()
    callback = lit.ConstraintCallback("projected", [on_output(L1Ball(1.0)), on_parameter("net.2.weight", NonNegative())])
    trainer = _trainer(lit, tmp_path, max_steps=6, accumulate_grad_batches=2, callbacks=[callback])
    trainer.fit(model, _data())
    assert trainer.global_step == 6 and callback.strategy.steps == 6  # one after_step per optimizer step
    assert bool((model.net[2].weight >= 0).all())
    with torch.no_grad():
        unseen = model(torch.randn(200, 4) * 10)
    assert float(unseen.abs().sum(1).max()) <= 1.0 + 1e-5
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("constraint/")}
    assert set(logged) == {f"constraint/{t.label}" for t in callback.strategy.targets}
    assert all(v <= 1e-5 for v in logged.values()), logged
    # the module's own training_step is back after fit
    assert "training_step" not in vars(model)


def _lagrangian_callback(lit: SimpleNamespace):
    import strategies

    return lit.ConstraintCallback(strategies.get("lagrangian", dual_lr=0.5), on_output(L1Ball(1.0)))


def _tensors(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for k in sorted(state, key=str) for t in _tensors(state[k])]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in _tensors(item)]
    return [torch.as_tensor(float(state))] if isinstance(state, (int, float)) else []


def test_lagrangian_resumes_from_a_lightning_checkpoint_with_its_multipliers(lit, tmp_path) -> None:
    # Full batch: Lightning 2.6 replays a batch when resuming at an epoch boundary, which changes the
    # data order of a resumed run with several batches per epoch (with or without this callback).
    data = lambda: _data(batch_size=64)  # noqa: E731
    straight_model, straight = lit.Regressor(), _lagrangian_callback(lit)
    _trainer(lit, tmp_path / "a", max_steps=16, callbacks=[straight]).fit(straight_model, data())

    first_model, first = lit.Regressor(), _lagrangian_callback(lit)
    trainer = _trainer(lit, tmp_path / "b", max_steps=8, callbacks=[first])
    trainer.fit(first_model, data())
    saved = first.strategy.state_dict()
    assert any(float(t.abs().max()) > 0 for t in _tensors(saved) if t.is_floating_point() and t.numel())
    checkpoint = tmp_path / "half.ckpt"
    trainer.save_checkpoint(checkpoint)

    resumed_model, resumed = lit.Regressor(), _lagrangian_callback(lit)
    seen: dict = {}

    class Spy(lit.pl.Callback):  # what the callback holds when training restarts, before any new step
        def on_train_start(self, trainer, pl_module):
            seen.update(step=trainer.global_step, state=resumed.strategy.state_dict())

    _trainer(lit, tmp_path / "c", max_steps=16, callbacks=[resumed, Spy()]).fit(resumed_model, data(), ckpt_path=checkpoint)
    assert seen["step"] == 8
    for got, want in zip(_tensors(seen["state"]), _tensors(saved), strict=True):
        assert torch.equal(got, want)  # the multipliers restored intact
    a, b = straight_model.state_dict(), resumed_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for got, want in zip(_tensors(resumed.strategy.state_dict()), _tensors(straight.strategy.state_dict()), strict=True):
        assert torch.equal(got, want)


def test_bad_uses_are_errors_that_say_what_to_do(lit, tmp_path) -> None:
    class NoOutputs(lit.Regressor):
        def training_step(self, batch, batch_idx):
            return torch.nn.functional.mse_loss(self(batch[0]), batch[1])

    callback = lit.ConstraintCallback("quadratic-penalty", on_output(L1Ball(1.0)))
    with pytest.raises(ValueError, match="pass them, strategy.loss"):
        _trainer(lit, tmp_path, max_steps=1, callbacks=[callback]).fit(NoOutputs(), _data())
    with pytest.raises(ValueError, match="has no submodule 'body'"):
        _trainer(
            lit, tmp_path, max_steps=1, callbacks=[lit.ConstraintCallback("projected", on_output(L1Ball(1.0)), module="body")]
        ).fit(lit.Regressor(), _data())
