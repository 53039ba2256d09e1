r"""Lagrangian saddle-point strategies: descend on the parameters, ascend on the multipliers.

For a target with inequalities :math:`g \le 0` and equalities :math:`h = 0` the strategies add
multiplier terms to the objective :math:`f` and, after each optimizer step, take one dual
*ascent* step on the defects recorded (detached) while the loss was built, i.e. simultaneous
gradient descent-ascent:

* ``lagrangian``:  :math:`L = f + \sum \lambda g + \sum \mu h`;
  :math:`\lambda \leftarrow \max(0, \lambda + \eta g)`, :math:`\mu \leftarrow \mu + \eta h`.
* ``augmented-lagrangian`` (Powell-Hestenes-Rockafellar):
  :math:`L = f + \frac{1}{2\rho}\sum(\max(0, \lambda + \rho g)^2 - \lambda^2) + \sum(\mu h + \frac\rho2 h^2)`;
  same dual step with :math:`\eta = \rho` by default; :math:`\rho` may grow geometrically.
* ``slack-lagrangian``: each inequality becomes the equality :math:`g + s^2 = 0` with slack
  variables :math:`s` trained by the user's optimizer (registered on the model as parameters
  ``constraint_slack_<i>``) and an unclipped multiplier; the set's own equalities as in ``lagrangian``.

Where the multipliers live:

* parameter targets: one multiplier per constraint entry, shape ``(rows, k)`` (one per weight
  for ``NonNegative``, one per row for a row-wise ``L1Ball``, one per equation for ``Affine``);
  their terms are summed.
* output targets, ``multipliers="shared"``: one multiplier per constraint entry shared by all
  samples, acting on the batch mean :math:`\bar g = \frac1B\sum_i g(y_i)`. This enforces the
  constraint *on average* over the data, not at every sample.
* output targets, ``multipliers="per-sample"``: the exact form, a table of shape
  ``(num_samples, k)`` indexed by ``loss(objective, outputs, sample_ids=idx)``; the terms are
  averaged over the batch (like the objective), and each sample's multiplier ascends on its own
  defect, :math:`\lambda_i \leftarrow \max(0, \lambda_i + \eta g_i)` (duplicate ids add up).

The dual step uses the defects recorded by every :meth:`loss` since the last :meth:`after_step`
(their mean for shared and parameter multipliers, each batch's rows for per-sample ones); a loss
computed with gradients disabled (e.g. under ``torch.no_grad()`` for validation) records nothing.
Non-finite defects raise ``FloatingPointError`` before any multiplier changes.

Multipliers are plain tensors that follow the device and dtype of the constraint values (moved
on use); inequality multipliers are :math:`\ge 0` at all times, and every multiplier is finite (a
dual step that would overflow raises instead). Lagrangian methods reach feasibility only at
convergence and only on the training points.

Under ``torch.distributed`` (DistributedDataParallel), every rank ends each dual step with the
same multipliers: shared multipliers step on the mean over the ranks of their batch means (one
all-reduce per step), per-sample multipliers on every rank's ``(sample_ids, defects)`` (gathered,
three small collectives per step), parameter multipliers need nothing (DDP keeps the parameters
identical). Nonlinear terms of shared multipliers (augmented, penalized slack) use the global batch
mean (one differentiable all-reduce per loss), so that the gradient equals a single process's on
the global batch. ``slack-lagrangian`` on outputs needs ``output_width`` there (see its doc).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from constrain import OutputTarget, ParameterTarget
from strategies import _distributed
from strategies._base import Strategy, Target, constraint_values, target_rows
from strategies._dual import DualOptimizer, dual_factory
from strategies._options import check_positive as _positive
from strategies._registry import register

Multipliers = Literal["shared", "mean", "per-sample"]
_KINDS = ("inequality", "equality", "slack")


class LagrangianStrategy(Strategy):
    r"""Shared machinery: multiplier storage, sample indexing, defect records, dual ascent, state.

    Subclasses give the elementwise primal term :meth:`term` for a multiplier and a constraint
    value, and may rewrite the set's constraints in :meth:`_constraints` (slack form). The dual
    step is the same for all: :math:`\nu \leftarrow \nu + \eta c`, clipped at 0 for inequalities.
    """

    family = "lagrangian"

    def __init__(
        self,
        *,
        dual_lr: float = 1.0,
        multipliers: Multipliers = "shared",
        num_samples: int | None = None,
        dual_optimizer: DualOptimizer | None = None,
        dual_kp: float = 4.0,
    ) -> None:
        super().__init__()
        self.dual_lr = _positive(dual_lr, "dual_lr")
        if multipliers not in ("shared", "mean", "per-sample"):
            raise ValueError(f"multipliers must be 'shared', 'mean' or 'per-sample', got {multipliers!r}.")
        self.dual_kp = _positive(dual_kp, "dual_kp")
        self.dual_optimizer = dual_optimizer
        self._dual_factory, self._dual_follows_lr = dual_factory(dual_optimizer, self.dual_lr, self.dual_kp)
        self._dual_opts: dict[str, torch.optim.Optimizer] = {}
        self.multiplier_mode: str = multipliers
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0):
            raise ValueError(f"num_samples must be a positive int (the training set's size), got {num_samples!r}.")
        self.num_samples = num_samples
        self._lam: dict[str, Tensor] = {}
        self._records: dict[str, list[tuple[Tensor, Tensor | None]]] = {}
        self._last_keys: list[str] = []  # the keys the last loss() call appended a record to

    # ----------------------------------------------------------------- support matrix
    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        """Every set with ``g <= 0`` / ``h = 0`` is supported, on outputs and on parameters."""
        return None

    # ----------------------------------------------------------------- hooks for subclasses
    #: Whether :meth:`term` is linear in the constraint values. A nonlinear term of a *shared* multiplier
    #: (augmented and penalized slack forms) depends on the batch mean itself, so under torch.distributed it
    #: is computed on the mean over every rank's batch (a differentiable all-reduce per loss), which makes
    #: the gradient the one of a single process on the global batch.
    linear_terms: ClassVar[bool] = True
    #: Whether ``multipliers="shared"`` also shares the multipliers of parameter targets across their rows, on
    #: the mean violation (an exact penalty whose weight is the multiplier). The augmented Lagrangian keeps the
    #: exact per-entry form there: its quadratic term damps the dual dynamics that make that form cycle.
    shared_parameters: ClassVar[bool] = True

    def term(self, kind: str, lam: Tensor, c: Tensor) -> Tensor:
        """Elementwise multiplier term for constraint values ``c`` and multipliers ``lam``."""
        return lam * c

    def current_dual_lr(self) -> float:
        """The dual step size used by the next :meth:`after_step`."""
        return self.dual_lr

    def _constraints(
        self, index: int, target: Target, g: Tensor | None, h: Tensor | None, ids: Tensor | None
    ) -> Iterator[tuple[str, Tensor | None]]:
        """``(kind, values)`` pairs carrying a multiplier; kind 'inequality' is clipped at 0, 'equality'
        and 'slack' (:math:`g + s^2`) are not."""
        yield "inequality", g
        yield "equality", h

    # ----------------------------------------------------------------- public helpers
    def mode(self, target: Target) -> str:
        """How ``target``'s multipliers are laid out: 'shared', 'mean' or 'per-sample' for outputs;
        'parameter-shared' (``multipliers="shared"``: one per constraint entry shared by the parameter's rows,
        on their mean violation) or 'parameter' (one per entry of every row, the exact form) for parameters."""
        if isinstance(target, ParameterTarget):
            return "parameter-shared" if self.multiplier_mode == "shared" and self.shared_parameters else "parameter"
        return self.multiplier_mode

    def multipliers(self) -> dict[str, Tensor]:
        """The current multipliers (detached clones), keyed ``'<target label> [<kind>]'``."""
        out = {}
        for key, lam in self._lam.items():
            index, kind = key.split(":")
            name = f"{self.targets[int(index)].label} [{kind}]"
            out[name if name not in out else f"{name} #{index}"] = lam.detach().clone()
        return out

    # ----------------------------------------------------------------- attach / loss
    def _attach(self) -> None:
        if self.multiplier_mode == "per-sample" and self.num_samples is None:
            if any(isinstance(t, OutputTarget) for t in self.targets):
                raise ValueError(
                    f"strategy {self.name!r}: multipliers='per-sample' needs num_samples=<size of the training set> "
                    f"(one multiplier row per sample)."
                )

    def _sample_ids(self, target: Target, sample_ids: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if sample_ids is None:
            raise ValueError(
                f"strategy {self.name!r} keeps one multiplier per training sample for {target.label}: pass the batch's "
                f"indices into the training set, strategy.loss(objective, outputs, sample_ids=idx)."
            )
        ids = torch.as_tensor(sample_ids, device=device)
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"sample_ids must be integer indices, got dtype {ids.dtype}.")
        ids = ids.reshape(-1).long()
        if ids.numel() != batch:
            raise ValueError(f"sample_ids has {ids.numel()} entries but the batch has {batch} samples.")
        assert self.num_samples is not None
        if ids.numel() and bool(((ids < 0) | (ids >= self.num_samples)).any()):
            raise IndexError(
                f"sample_ids must lie in [0, num_samples={self.num_samples}); got values from {int(ids.min())} to "
                f"{int(ids.max())}. Build the strategy with num_samples = size of the training set."
            )
        return ids

    def _multiplier(self, key: str, c: Tensor, mode: str) -> Tensor:
        """The stored multiplier for ``key`` (created as zeros on first use), on ``c``'s device and dtype."""
        lam = self._lam.get(key)
        if mode == "per-sample":
            assert self.num_samples is not None
            shape = (self.num_samples, c.shape[-1])
        else:
            shape = tuple(c.shape)
        if lam is None:
            lam = c.new_zeros(shape)
        elif tuple(lam.shape) != shape:
            raise ValueError(
                f"strategy {self.name!r}: the multipliers {key!r} have shape {tuple(lam.shape)} but the constraint "
                f"now has shape {shape}; the model or the constraint changed since they were created."
            )
        elif lam.device != c.device or lam.dtype != c.dtype:
            lam = lam.to(c)
        self._lam[key] = lam
        return lam

    def _loss_terms(self, model: nn.Module, outputs: Tensor | None, sample_ids: Tensor | None) -> Tensor | None:
        total: Tensor | None = None
        record = torch.is_grad_enabled()  # a loss evaluated under no_grad (validation) moves no multiplier
        self._last_keys = []
        for index, target in enumerate(self.targets):
            rows = target_rows(target, model, outputs)
            mode = self.mode(target)
            ids = self._sample_ids(target, sample_ids, rows.shape[0], rows.device) if mode == "per-sample" else None
            g, h = constraint_values(target, rows)
            if mode in ("shared", "parameter-shared"):  # one multiplier per entry, on the mean violation: every row
                g = None if g is None else g.clamp_min(0).mean(0)
                h = None if h is None else h.abs().mean(0)
            elif mode == "mean":  # one multiplier per entry, on the batch mean of the values: on average
                g = None if g is None else g.mean(0)
                h = None if h is None else h.mean(0)
            if mode in ("shared", "mean") and not self.linear_terms and _distributed.active():  # every rank's batch
                g = None if g is None else _distributed.global_mean(g)
                h = None if h is None else _distributed.global_mean(h)
            for kind, c in self._constraints(index, target, g, h, ids):
                if c is None or c.numel() == 0:
                    continue
                key = f"{index}:{kind}"
                lam = self._multiplier(key, c, mode)
                if ids is not None:
                    lam = lam[ids]
                if c.dim() == 1 and type(self).term is LagrangianStrategy.term:
                    part = torch.dot(lam, c)  # lam . c of shared multipliers: one kernel and one backward node
                else:
                    part = self.term(kind, lam, c).sum()
                if mode == "per-sample":
                    part = part / c.shape[0]
                total = part if total is None else total + part
                if record:
                    self._records.setdefault(key, []).append((c.detach(), ids))
                    self._last_keys.append(key)
        return total

    def _discard_loss(self) -> None:
        for key in self._last_keys:
            self._records[key].pop()
            if not self._records[key]:
                del self._records[key]
        self._last_keys = []

    def _discard_step(self) -> None:
        self._records, self._last_keys = {}, []

    def _check_records(self, records: dict[str, list[tuple[Tensor, Tensor | None]]], eta: float) -> None:
        r"""Raise FloatingPointError naming the step and constraint if a recorded defect is not finite, or if
        the dual step could overflow: :math:`\max|\nu| + \eta \sum |c|` bounds every updated multiplier, so
        a finite bound keeps every multiplier finite (one host synchronisation for all keys)."""
        if len(records) == 1:  # one multiplier and one defect (a shared scalar constraint): two item() reads
            ((key, recs),) = records.items()  # instead of eight small kernels; anything else takes the path below
            lam = self._lam[key]
            if len(recs) == 1 and lam.numel() == 1 and recs[0][0].numel() == 1:
                bound = abs(lam.item()) + eta * abs(recs[0][0].item())  # NaN / Inf fail the test
                if bound <= 0.5 * torch.finfo(lam.dtype).max:
                    return
        bounds = [  # per-sample tables: only the rows this step updates
            (self._lam[key] if recs[0][1] is None else self._lam[key][torch.cat([i for _, i in recs])]).abs().amax()  # type: ignore[misc]
            + eta * sum(c.abs().sum() for c, _ in recs)
            for key, recs in records.items()
        ]
        if not bounds or bool(torch.isfinite(torch.stack([b.to(bounds[0]) for b in bounds])).all()):
            return
        for key, recs in records.items():
            index, kind = key.split(":")
            label = self.targets[int(index)].label
            if not all(bool(torch.isfinite(c).all()) for c, _ in recs):
                raise FloatingPointError(
                    f"strategy {self.name!r}: the {kind} constraint values of {label} are not "
                    f"finite at step {self.steps}; no multiplier was updated. Lower the learning rates or check "
                    f"the model."
                )
        raise FloatingPointError(
            f"strategy {self.name!r}: the dual step at step {self.steps} would overflow the multipliers of "
            f"{', '.join(self.targets[int(k.split(':')[0])].label for k in records)} (dual_lr {eta:g} times constraint "
            f"values near the largest {next(iter(self._lam.values())).dtype} number); no multiplier was updated. "
            f"Lower dual_lr or rescale the constraint."
        )

    # ----------------------------------------------------------------- dual step
    @torch.no_grad()
    def _after_step(self) -> None:
        records, self._records, self._last_keys = self._records, {}, []
        eta = self.current_dual_lr()
        self._check_records(records, eta)  # validate everything before touching any multiplier
        if _distributed.active():
            records = self._combine_ranks(records)
        if self._dual_factory is not None:
            self._optimizer_step(records, eta)
            self._after_dual_step()
            return
        for key, recs in records.items():
            lam = self._lam[key]
            clip = key.endswith(":inequality")
            if recs[0][1] is None:  # shared or parameter: one step on the mean of the recorded defects
                c = recs[0][0] if len(recs) == 1 else torch.stack([r[0] for r in recs]).mean(0)
                lam.add_(c.to(lam), alpha=eta)
                if clip:
                    lam.clamp_min_(0)
            else:  # per-sample: each sample's row ascends on its own defect
                ids = torch.cat([r[1] for r in recs]).to(lam.device)  # type: ignore[misc]
                c = torch.cat([r[0] for r in recs]).to(lam)
                lam.index_add_(0, ids, c, alpha=eta)
                if clip:
                    lam[ids] = lam[ids].clamp_min(0)
        self._after_dual_step()

    def _optimizer_step(self, records: dict[str, list[tuple[Tensor, Tensor | None]]], eta: float) -> None:
        """The dual step through ``dual_optimizer``: ``lam.grad = -c`` (ascent as descent), ``step()``, clip.
        Per-sample tables get the batch's rows (the others a zero gradient)."""
        for key, recs in records.items():
            lam = self._lam[key]
            opt = self._dual_opts.get(key)
            if opt is None or opt.param_groups[0]["params"][0] is not lam:
                opt = self._dual_opts[key] = self._new_dual_optimizer(lam, opt)
            if self._dual_follows_lr:
                for group in opt.param_groups:
                    group["lr"] = eta
            if recs[0][1] is None:
                c = recs[0][0] if len(recs) == 1 else torch.stack([r[0] for r in recs]).mean(0)
                lam.grad = c.to(lam).neg()
            else:
                ids = torch.cat([r[1] for r in recs]).to(lam.device)  # type: ignore[misc]
                lam.grad = torch.zeros_like(lam).index_add_(0, ids, torch.cat([r[0] for r in recs]).to(lam), alpha=-1)
            opt.step()
            lam.grad = None
            if key.endswith(":inequality"):
                lam.clamp_min_(0)
            if not bool(torch.isfinite(lam).all()):
                raise FloatingPointError(
                    f"strategy {self.name!r}: the dual optimizer made the multipliers of "
                    f"{self.targets[int(key.split(':')[0])].label} non-finite at step {self.steps}; lower dual_lr."
                )

    def _new_dual_optimizer(self, lam: Tensor, old: torch.optim.Optimizer | None) -> torch.optim.Optimizer:
        """The optimizer of one multiplier tensor (keeping ``old``'s state when the tensor was moved or
        reloaded: same shape, new object)."""
        assert self._dual_factory is not None
        opt = self._dual_factory([lam])
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"dual_optimizer must build a torch.optim.Optimizer, got {type(opt).__name__}.")
        if old is not None:
            opt.load_state_dict(old.state_dict())
        return opt

    def _combine_ranks(
        self, records: dict[str, list[tuple[Tensor, Tensor | None]]]
    ) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        """Under torch.distributed: every rank's defects, so that every rank takes the same dual step.

        Shared multipliers step on the mean over the ranks of each rank's batch mean (the global batch
        mean when the ranks' batches are equally large, as with DistributedSampler): one all-reduce for
        all of them. Per-sample multipliers step on every rank's (ids, defects), gathered in rank order.
        Parameter multipliers need nothing: DDP keeps the parameters, hence their defects, identical.
        Keys are visited in sorted order of the multiplier table, the same on every rank (created by the
        first loss); a rank that recorded nothing for a key contributes no defect.
        """
        combined = {k: v for k, v in records.items() if self.mode(self.targets[int(k.split(":")[0])]).startswith("parameter")}
        keys = sorted(k for k in self._lam if not self.mode(self.targets[int(k.split(":")[0])]).startswith("parameter"))
        shared = [k for k in keys if self.mode(self.targets[int(k.split(":")[0])]) in ("shared", "mean")]
        means, weights = [], []
        for key in shared:
            recs = records.get(key)
            if recs:
                means.append(recs[0][0] if len(recs) == 1 else torch.stack([r[0] for r in recs]).mean(0))
                weights.append(1.0)
            else:
                means.append(torch.zeros_like(self._lam[key]))
                weights.append(0.0)
        for key, mean in zip(shared, _distributed.all_mean(means, weights), strict=True):
            if mean is not None:  # some rank recorded a defect
                combined[key] = [(mean, None)]
        for key in keys:
            if key in shared:
                continue
            recs = records.get(key, [])
            lam = self._lam[key]
            ids = torch.cat([r[1] for r in recs]) if recs else torch.zeros(0, dtype=torch.long)  # type: ignore[misc]
            c = torch.cat([r[0] for r in recs]) if recs else lam.new_zeros(0, lam.shape[-1])
            ids, c = _distributed.all_gather_rows(ids, c)
            if ids.numel():
                combined[key] = [(c, ids)]
        return combined

    def _after_dual_step(self) -> None:
        """Schedules after the dual step (penalty growth)."""

    # ----------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"multipliers": {k: v.detach().clone() for k, v in self._lam.items()}}
        if self._dual_opts:
            state["dual_optimizer"] = {k: _clone_state(o.state_dict()) for k, o in self._dual_opts.items()}
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "multipliers" not in state:
            raise KeyError(f"strategy {self.name!r}: state has no 'multipliers'; it comes from another strategy.")
        lam = state.pop("multipliers")
        dual = state.pop("dual_optimizer", {})
        if dual and self._dual_factory is None:
            raise KeyError(
                f"strategy {self.name!r}: the state holds dual optimizer states but this strategy has no "
                f"dual_optimizer; build it with the same dual_optimizer before load_state_dict."
            )
        if not isinstance(lam, dict):
            raise TypeError(f"strategy {self.name!r}: state['multipliers'] must be a dict of tensors, got {type(lam).__name__}.")
        for key, value in lam.items():
            index, _, kind = str(key).partition(":")
            if not index.isdigit() or int(index) >= len(self.targets) or kind not in _KINDS:
                raise KeyError(
                    f"strategy {self.name!r}: multiplier {key!r} does not fit the {len(self.targets)} attached "
                    f"constraint(s); attach the same constraints before load_state_dict."
                )
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"strategy {self.name!r}: multiplier {key!r} must be a floating-point tensor.")
            if not bool(torch.isfinite(value).all()) or (kind == "inequality" and bool((value < 0).any())):
                raise ValueError(
                    f"strategy {self.name!r}: multiplier {key!r} in the state is "
                    f"{'negative' if bool(torch.isfinite(value).all()) else 'not finite'}; inequality multipliers are "
                    f">= 0 and all are finite. The state is corrupt: load one saved by strategy.state_dict()."
                )
        self._load_extra(state)
        self._lam = {k: v.detach().clone() for k, v in lam.items()}
        self._records = {}
        self._dual_opts = {}
        for key, opt_state in dual.items():
            if key not in self._lam:
                raise KeyError(f"strategy {self.name!r}: dual optimizer state {key!r} has no multiplier in the state.")
            opt = self._new_dual_optimizer(self._lam[key], None)
            opt.load_state_dict(_clone_state(opt_state))
            self._dual_opts[key] = opt

    def _load_extra(self, state: dict[str, Any]) -> None:
        if state:
            raise KeyError(f"strategy {self.name!r} has no state entries {sorted(state)}.")


def _clone_state(state: Any) -> Any:
    """A deep copy of an optimizer state_dict (tensors cloned), so that saved and live states never alias."""
    if isinstance(state, Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _clone_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_clone_state(v) for v in state]
    return state


@register("lagrangian")
class Lagrangian(LagrangianStrategy):
    r""":math:`f + \sum \lambda g + \sum \mu h`; :math:`\lambda \leftarrow \max(0, \lambda + \eta g)`,
    :math:`\mu \leftarrow \mu + \eta h` after each step (simultaneous gradient descent-ascent).

    Options: ``dual_lr`` (:math:`\eta`), ``multipliers`` ('shared': on the batch mean of output
    constraints, i.e. the constraint holds on average; 'per-sample': the exact form, one row per
    training sample, needs ``num_samples`` and ``sample_ids``).
    """

    summary = "multipliers on g and h, dual gradient ascent clipped at 0; feasible at convergence, on training points"


@register("augmented-lagrangian")
class AugmentedLagrangian(LagrangianStrategy):
    r"""PHR augmented Lagrangian with penalty :math:`\rho`:

    :math:`f + \frac{1}{2\rho}\sum(\max(0, \lambda + \rho g)^2 - \lambda^2) + \sum(\mu h + \frac\rho2 h^2)`;
    after each step :math:`\lambda \leftarrow \max(0, \lambda + \eta g)`, :math:`\mu \leftarrow \mu + \eta h`
    with :math:`\eta` = ``dual_lr`` (default: the current :math:`\rho`), then
    :math:`\rho \leftarrow \rho \cdot` ``penalty_growth``.
    """

    summary = "PHR augmented Lagrangian: multipliers plus quadratic penalty rho; dual step rho, rho may grow"
    linear_terms = False
    shared_parameters = False

    def __init__(
        self,
        *,
        penalty: float = 10.0,
        dual_lr: float | None = 0.1,
        multipliers: Multipliers = "shared",
        num_samples: int | None = None,
        penalty_growth: float = 1.0,
        dual_optimizer: DualOptimizer | None = None,
        dual_kp: float = 4.0,
    ) -> None:
        self.penalty = _positive(penalty, "penalty")
        super().__init__(
            dual_lr=self.penalty if dual_lr is None else dual_lr,
            multipliers=multipliers,
            num_samples=num_samples,
            dual_optimizer=dual_optimizer,
            dual_kp=dual_kp,
        )
        self.dual_lr_option = dual_lr
        self.penalty_growth = _positive(penalty_growth, "penalty_growth")

    def current_dual_lr(self) -> float:
        return self.penalty if self.dual_lr_option is None else self.dual_lr

    def term(self, kind: str, lam: Tensor, c: Tensor) -> Tensor:
        rho = self.penalty
        if kind == "inequality":
            return ((lam + rho * c).clamp_min(0).square() - lam.square()) / (2 * rho)
        return lam * c + (0.5 * rho) * c.square()

    def _after_dual_step(self) -> None:
        self.penalty *= self.penalty_growth

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "penalty": self.penalty}

    def _load_extra(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "penalty" not in state:
            raise KeyError(f"strategy {self.name!r}: state has no 'penalty'.")
        penalty = state.pop("penalty")
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not math.isfinite(penalty) or penalty <= 0:
            raise ValueError(f"strategy {self.name!r}: state['penalty'] must be a positive number, got {penalty!r}.")
        super()._load_extra(state)
        self.penalty = float(penalty)


def _slack_name(index: int) -> str:
    return f"constraint_slack_{index}"


def _resize_lazy_slacks(names: list[str]) -> Any:
    """A load_state_dict pre-hook: give a not-yet-sized output slack the saved slack's shape."""

    def hook(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        for name in names:
            param, value = module._parameters.get(name), state_dict.get(prefix + name)
            if param is not None and isinstance(value, Tensor) and param.numel() == 0 and value.shape != param.shape:
                param.data = torch.empty(value.shape, dtype=param.dtype, device=param.device)

    return hook


@register("slack-lagrangian")
class SlackLagrangian(LagrangianStrategy):
    r"""Inequalities as equalities :math:`g + s^2 = 0` with trainable slacks :math:`s`:

    :math:`f + \sum \nu (g + s^2) + \sum \mu h`; :math:`\nu \leftarrow \nu + \eta (g + s^2)` and
    :math:`\mu \leftarrow \mu + \eta h` (no clipping). The slacks are parameters of the model,
    ``model.constraint_slack_<i>`` for the i-th target (registered on the model itself, not as a
    submodule, so an ``nn.Sequential`` still runs; build the optimizer *after* attach so that it
    trains them; ``model.to()`` and ``model.state_dict()`` include them);
    parameter slacks start at :math:`s = \sqrt{\max(-g, 0) + \epsilon}` with
    :math:`\epsilon = 10^{-4}` (a slack at exactly 0 has zero gradient and could never grow),
    output slacks the same on the first batch each sample appears in.

    ``penalty`` :math:`\rho \ge 0` adds :math:`\frac\rho2 (g + s^2)^2 + \frac\rho2 h^2` (0: the plain
    form). Without it the saddle is degenerate at an inactive constraint (the Lagrangian's
    curvature in :math:`s` is :math:`2\nu = 0` there) and :math:`(s^2, \nu)` cycle like a
    predator-prey system under gradient descent-ascent, damped only through the objective;
    :math:`\rho > 0` removes the cycle, so the default is :math:`\rho = 1` (the penalized form).

    ``output_width``: the number of outputs per sample, so that the slacks of output constraints
    are created by :meth:`attach` rather than on the first batch. Needed under
    ``DistributedDataParallel`` (which must see every parameter at its final size when it wraps the
    model); there the slacks are initialised identically on every rank (batch means all-reduced,
    per-sample first defects all-gathered).
    """

    summary = "inequalities as g + s^2 = 0 with slacks trained by the optimizer; unclipped equality multipliers"

    #: Floor under :math:`s^2` at initialisation: a slack at exactly 0 is a stationary point.
    slack_floor = 1e-4

    def __init__(
        self,
        *,
        dual_lr: float = 1.0,
        multipliers: Multipliers = "shared",
        num_samples: int | None = None,
        penalty: float = 1.0,
        output_width: int | None = None,
        dual_optimizer: DualOptimizer | None = None,
        dual_kp: float = 4.0,
    ) -> None:
        super().__init__(
            dual_lr=dual_lr, multipliers=multipliers, num_samples=num_samples, dual_optimizer=dual_optimizer, dual_kp=dual_kp
        )
        if not math.isfinite(penalty) or penalty < 0:
            raise ValueError(f"penalty must be >= 0 and finite, got {penalty}.")
        if output_width is not None and (
            isinstance(output_width, bool) or not isinstance(output_width, int) or output_width <= 0
        ):
            raise ValueError(f"output_width must be a positive int (outputs per sample), got {output_width!r}.")
        self.penalty = float(penalty)
        self.output_width = output_width
        self.linear_terms = self.penalty == 0  # type: ignore[misc]
        self._all_seen: set[int] = set()  # output targets whose every sample has its slack initialised

    def term(self, kind: str, lam: Tensor, c: Tensor) -> Tensor:
        if self.penalty == 0:
            return lam * c
        return lam * c + (0.5 * self.penalty) * c.square()

    def _attach(self) -> None:
        super()._attach()
        model = self._require_model()
        taken = [_slack_name(i) for i, t in enumerate(self.targets) if t.set.has_inequalities and hasattr(model, _slack_name(i))]
        if taken:
            raise ValueError(
                f"slack-lagrangian registers its slack variables on the model as {', '.join(taken)}, but the model "
                f"already has that attribute (another slack strategy attached?); attach one slack strategy per model."
            )
        reference = next(iter(model.parameters()), None)
        factory: dict[str, Any] = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
        lazy = []
        for index, target in enumerate(self.targets):
            if not target.set.has_inequalities:
                continue
            name = _slack_name(index)
            if isinstance(target, ParameterTarget):
                with torch.no_grad():
                    g, _ = constraint_values(target, target.gather(model).detach())
                model.register_parameter(name, nn.Parameter(self._initial_slack(g)))
            elif self.output_width is not None:  # sized now, initialised from the first batch
                with torch.no_grad():
                    width = target.set.inequality(torch.zeros(1, self.output_width, **factory)).shape[-1]
                rows = (self.num_samples,) if self.multiplier_mode == "per-sample" else ()
                start = torch.full((*rows, width), math.sqrt(self.slack_floor), **factory)  # type: ignore[arg-type]
                model.register_parameter(name, nn.Parameter(start))
                seen = torch.zeros(rows[0] if rows else 1, dtype=torch.bool, device=factory.get("device"))
                model.register_buffer(f"{name}_seen", seen)
            else:  # sized on the first batch (the output width is not known before)
                model.register_parameter(name, nn.Parameter(torch.empty(0, **factory)))
                lazy.append(name)
                if self.multiplier_mode == "per-sample":
                    assert self.num_samples is not None
                    seen = torch.zeros(self.num_samples, dtype=torch.bool, device=factory.get("device"))
                    model.register_buffer(f"{name}_seen", seen)
        if lazy:
            model.register_load_state_dict_pre_hook(_resize_lazy_slacks(lazy))

    def _initial_slack(self, g: Tensor) -> Tensor:
        r""":math:`\sqrt{\max(-g, 0) + \epsilon}`; a non-finite defect (a NaN batch) gets the floor, so that a
        step skipped or refused for non-finite values leaves no NaN in the slacks."""
        slack = (-g).clamp_min(0)
        return torch.where(torch.isfinite(slack), slack, 0).add(self.slack_floor).sqrt()

    def slack(self, index: int) -> Tensor:
        """The slack parameter of the ``index``-th constraint target (``model.constraint_slack_<index>``)."""
        return getattr(self._require_model(), _slack_name(index))

    def _constraints(
        self, index: int, target: Target, g: Tensor | None, h: Tensor | None, ids: Tensor | None
    ) -> Iterator[tuple[str, Tensor | None]]:
        if g is not None and g.numel():
            s = self.slack(index)
            if s.numel() == 0:  # first batch of an output target: size and initialise the slacks
                if _distributed.active():
                    raise RuntimeError(
                        f"slack-lagrangian under torch.distributed: the slack of {target.label} would be created on "
                        f"the first batch, after DistributedDataParallel wrapped the model. Pass "
                        f"output_width=<outputs per sample> to strategies.get so that attach creates it."
                    )
                shape = (self.num_samples, g.shape[-1]) if ids is not None else tuple(g.shape)
                with torch.no_grad():
                    s.data = torch.full(shape, math.sqrt(self.slack_floor), dtype=s.dtype, device=s.device)
                    if ids is None:
                        s.copy_(self._initial_slack(g.detach()))
            elif isinstance(target, OutputTarget) and index not in self._all_seen:
                if s.shape[-1] != g.shape[-1]:
                    raise ValueError(
                        f"slack-lagrangian: output_width={self.output_width} gives {target.label} {s.shape[-1]} "
                        f"inequalities per sample, but these outputs give {g.shape[-1]}; pass the model's output width."
                    )
                if ids is None:  # created by attach (output_width): initialise from the first batch mean
                    seen = getattr(self._require_model(), f"{_slack_name(index)}_seen", None)
                    if seen is not None and not bool(seen.all()):
                        with torch.no_grad():
                            s.copy_(self._initial_slack(_distributed.all_mean([g.detach()])[0]))
                            seen.fill_(True)
                    self._all_seen.add(index)
            if ids is not None:
                if index not in self._all_seen:  # a sample's slack starts from its first defect
                    seen = getattr(self._require_model(), f"{_slack_name(index)}_seen")
                    fresh = ~seen[ids.to(seen.device)]
                    if _distributed.active():  # every rank initialises every rank's fresh samples
                        new_ids = ids[fresh.to(ids.device)]
                        new_ids, values = _distributed.all_gather_rows(
                            new_ids, self._initial_slack(g.detach()[fresh.to(g.device)])
                        )
                        with torch.no_grad():
                            s[new_ids.to(s.device)] = values.to(s)
                            seen[new_ids.to(seen.device)] = True
                    elif bool(fresh.any()):
                        with torch.no_grad():
                            new_ids = ids[fresh.to(ids.device)]
                            s[new_ids.to(s.device)] = self._initial_slack(g.detach()[fresh.to(g.device)]).to(s)
                            seen[new_ids.to(seen.device)] = True
                    if bool(seen.all()):
                        self._all_seen.add(index)
                s = s[ids.to(s.device)]
            yield "slack", g + s.to(g).square()  # an equality: its multiplier is not clipped
        yield "equality", h
