r"""Any strategy on a PyTorch Lightning ``LightningModule``: :class:`ConstraintCallback`.

Needs the optional extra ``pip install "constrain[lightning]"`` (Lightning 2.x); importing this
module without Lightning raises ``ImportError`` saying so. The module's ``training_step`` changes
in one way only: it returns the outputs the constraints are on together with the loss,
``{"loss": loss, "outputs": out}`` (a plain loss tensor is enough when every constraint is on
parameters; add ``"sample_ids"`` for per-sample multipliers). The callback then does the four
calls of the strategy protocol at the right moments of Lightning's loop:

- ``setup`` (before ``configure_optimizers``): ``strategy.attach(module, constraints)``, so that
  parameters a reparameterization adds to the module are in the optimizer (the Lagrangian family
  adds none: its multipliers and slacks are modules of the strategy, stepped in ``after_step``);
- each training step: the loss Lightning back-propagates is ``strategy.loss(loss, outputs,
  sample_ids)`` (penalty and multiplier terms added);
- after each optimizer step (not after accumulation-only batches): ``strategy.after_step()``
  (projection, dual ascent, schedules), then ``strategy.report(outputs)`` logged as
  ``constraint/<label>`` metrics (the largest violation of each constraint);
- checkpoints: ``strategy.state_dict()`` (multipliers, slacks, dual and slack optimizer states,
  schedules, step counts) is saved in every Lightning checkpoint and restored on
  ``trainer.fit(..., ckpt_path=...)``; what a reparameterization added to the module
  (parametrizations) is in the module's own ``state_dict``.

Automatic optimization only (with ``automatic_optimization = False`` call the strategy yourself).
The strategy stays attached after ``fit``: projection layers and reparameterizations keep holding
in ``validate``, ``test`` and ``predict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor, nn

import strategies
from strategies._base import Strategy, Target, as_targets

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'strategies.lightning needs PyTorch Lightning 2.x: pip install "constrain[lightning]" (or pip install lightning).'
    ) from error

__all__ = ["ConstraintCallback"]


class ConstraintCallback(pl.Callback):
    """Apply ``strategy`` (a :class:`~strategies.Strategy` or a registered name) to ``constraints``
    on a ``LightningModule`` during ``trainer.fit``.

    ``module``: the attribute path of the submodule the constraints are on (``"net"``: parameter
    names like ``"2.weight"`` are relative to it, and output constraints hook its forward); by
    default the ``LightningModule`` itself (names like ``"net.2.weight"``; output hooks on its
    ``forward``, so ``training_step`` should call ``self(x)``). ``log_metrics``: log the violations.
    """

    def __init__(
        self,
        strategy: Strategy | str,
        constraints: Target | Iterable[Target],
        *,
        module: str | None = None,
        log_metrics: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(strategy, str):
            strategy = strategies.get(strategy)
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a Strategy or a registered name, got {type(strategy).__name__}.")
        self.strategy = strategy
        self.constraints = as_targets(constraints)
        self.module = module
        self.log_metrics = log_metrics
        self._outputs: Tensor | None = None
        self._stepped_at: int | None = None  # trainer.global_step when after_step last ran
        self._wrapped: pl.LightningModule | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(strategy=self.strategy.name, module=self.module)

    # ------------------------------------------------------------------ attach
    def _target_module(self, pl_module: pl.LightningModule) -> nn.Module:
        target: nn.Module = pl_module
        for part in self.module.split(".") if self.module else ():
            if not isinstance(getattr(target, part, None), nn.Module):
                raise ValueError(
                    f"ConstraintCallback(module={self.module!r}): {type(target).__name__} has no "
                    f"submodule {part!r}; give the attribute path of the module to constrain."
                )
            target = getattr(target, part)
        return target

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Attach the strategy (once), before Lightning builds the optimizer; wrap ``training_step``."""
        target = self._target_module(pl_module)
        if self.strategy.model is None:
            if self.strategy.attach(target, self.constraints) is not target:  # pragma: no cover - no strategy does
                raise RuntimeError(
                    f"strategy {self.strategy.name!r} replaced the module on attach; "
                    f"the callback needs strategies that constrain the module in place."
                )
        elif self.strategy.model is not target:
            raise RuntimeError(
                "this ConstraintCallback's strategy is attached to another module; build one "
                "callback (and strategy) per LightningModule."
            )
        if stage == "fit":
            if not pl_module.automatic_optimization:
                raise ValueError(
                    "ConstraintCallback needs automatic optimization; with "
                    "automatic_optimization = False call strategy.loss(...) before backward and "
                    "strategy.after_step() after optimizer.step() in training_step yourself."
                )
            self._wrap_training_step(pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._wrapped is not None:
            del self._wrapped.training_step  # the instance attribute set below; the class method shows again
            self._wrapped = None

    def _wrap_training_step(self, pl_module: pl.LightningModule) -> None:
        if self._wrapped is pl_module:
            return
        original = pl_module.training_step

        def training_step(*args: Any, **kwargs: Any) -> Any:
            return self._add_terms(original(*args, **kwargs))

        pl_module.training_step = training_step  # type: ignore[method-assign]  # on this instance; teardown deletes it
        self._wrapped = pl_module

    # ------------------------------------------------------------------ the loop
    def _add_terms(self, result: Any) -> Any:
        """``training_step``'s result with the strategy's terms added to its loss."""
        if result is None:  # Lightning skips the batch
            return None
        if isinstance(result, Tensor):
            loss, outputs, ids = result, None, None
        elif isinstance(result, Mapping) and "loss" in result:
            loss, outputs, ids = result["loss"], result.get("outputs"), result.get("sample_ids")
        else:
            raise TypeError(
                f"training_step returned {type(result).__name__}; with ConstraintCallback return the "
                f"loss, or {{'loss': loss, 'outputs': outputs}} when constraints are on outputs."
            )
        total = self.strategy.loss(loss, outputs, sample_ids=ids)
        self._outputs = outputs.detach() if isinstance(outputs, Tensor) else None
        return total if isinstance(result, Tensor) else {**result, "loss": total}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stepped_at = trainer.global_step  # after a resume: the restored step count

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After the optimizer step of this batch (none while accumulating gradients): ``after_step``
        and the violations as metrics."""
        if trainer.global_step == self._stepped_at:
            return
        self._stepped_at = trainer.global_step
        self.strategy.after_step()
        if self.log_metrics:
            report = self.strategy.report(self._outputs)
            batch_size = int(self._outputs.shape[0]) if self._outputs is not None and self._outputs.dim() else 1
            pl_module.log_dict(
                {f"constraint/{label}": value for label, value in report.items()},
                on_step=True,
                on_epoch=False,
                batch_size=batch_size,
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Saved in Lightning checkpoints: the strategy's :meth:`~strategies.Strategy.state_dict`."""
        return {"strategy": self.strategy.state_dict()} if self.strategy.model is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restored by ``trainer.fit(..., ckpt_path=...)`` after ``setup`` attached the strategy."""
        if "strategy" in state_dict:
            self.strategy.load_state_dict(state_dict["strategy"])
