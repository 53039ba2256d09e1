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
* ``slack-lagrangian`` (:mod:`strategies._slack_lagrangian`): each inequality becomes the equality
  :math:`g + s^2 = 0` with slack variables :math:`s` that the strategy owns and steps itself, and an
  unclipped multiplier; the set's own equalities as in ``lagrangian``.

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

``primal="proximal"`` (``lagrangian``, ``augmented-lagrangian``): the multiplier term of a weight row in an
L1 ball, :math:`\phi(\|W_j\|_1 - r)`, is not smooth where a coordinate is 0, and Adam's step on its
subgradient leaves the zero coordinates chattering at the size of the step (on lin-weight-l1 a violation of
1e-6 to 5e-6 at the end of the study's budget, with the multipliers already converged). In the proximal form
that term leaves the loss and is applied after the optimizer's step as its proximal step in the optimizer's
metric, a weighted soft threshold (:mod:`strategies._lagrangian_prox`; with shared multipliers, the exact
penalty's hinge prox at weight :math:`\lambda / R`); the dual step is unchanged. Every other term is
smooth in the weights (orthant, affine: linear or quadratic in :math:`w`) or acts on outputs, which are not
the optimizer's variables: those stay in the loss. An optimizer with no known diagonal step (other than Adam,
AdamW, RMSprop, Adagrad, SGD) gets a warning and the gradient form.

Multipliers are :class:`~strategies._multipliers.Multiplier` modules of the strategy
(``strategy.multiplier_modules``, an ``nn.ModuleDict``), one per target and constraint kind; their
tensors follow the device and dtype of the constraint values (moved on use); inequality
multipliers are :math:`\ge 0` at all times, and every multiplier is finite (a dual step that would
overflow raises instead). Lagrangian methods reach feasibility only at
convergence and only on the training points.

Under ``torch.distributed`` (DistributedDataParallel), every rank ends each dual step with the
same multipliers: shared multipliers step on the mean over the ranks of their batch means (one
all-reduce per step), per-sample multipliers on every rank's ``(sample_ids, defects)`` (gathered,
three small collectives per step), parameter multipliers need nothing (DDP keeps the parameters
identical). Nonlinear terms of shared multipliers (augmented, penalized slack) use the global batch
mean (one differentiable all-reduce per loss), so that the gradient equals a single process's on
the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal, NamedTuple, NoReturn

import torch
from torch import Tensor, nn

from constrain import L1Ball, OutputTarget, ParameterTarget
from strategies import _distributed
from strategies._base import Strategy, Target, constraint_values, target_rows
from strategies._dual import DualOptimizer, dual_factory
from strategies._lagrangian_prox import l1_multiplier_prox
from strategies._multipliers import Kind, Layout, Multiplier, clone_state, half_max
from strategies._optimizer_metric import OptimizerWatch
from strategies._options import check_positive as _positive
from strategies._penalty_prox import exact_penalty_prox
from strategies._registry import register
from strategies._warnings import warn_at_caller

Multipliers = Literal["shared", "mean", "per-sample"]
Primal = Literal["gradient", "proximal"]


class _Plan(NamedTuple):
    """What the loss needs of one target on every step, fixed at attach: its position in the strategy's targets, the
    target, the layout of its multipliers and the multiplier modules of its inequalities (or slack equalities) and
    equalities (None if none)."""

    position: int
    target: Target
    layout: Layout
    inequality: Multiplier | None
    equality: Multiplier | None


class LagrangianStrategy(Strategy):
    r"""Shared machinery: multiplier modules, sample indexing, defect records, dual ascent, state.

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
        primal: Primal = "gradient",
    ) -> None:
        super().__init__()
        self.dual_lr = _positive(dual_lr, "dual_lr")
        self.primal: str = primal
        self._watch: OptimizerWatch | None = None
        if multipliers not in ("shared", "mean", "per-sample"):
            raise ValueError(f"multipliers must be 'shared', 'mean' or 'per-sample', got {multipliers!r}.")
        self.dual_kp = _positive(dual_kp, "dual_kp")
        self.dual_optimizer = dual_optimizer
        self._dual_factory, self._dual_follows_lr = dual_factory(dual_optimizer, self.dual_lr, self.dual_kp)
        self._dual_opt: torch.optim.Optimizer | None = None
        self.multiplier_mode: str = multipliers
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0):
            raise ValueError(f"num_samples must be a positive int (the training set's size), got {num_samples!r}.")
        self.num_samples = num_samples
        #: One :class:`Multiplier` per target and constraint kind, created by :meth:`attach`.
        self.multiplier_modules = nn.ModuleDict()
        self._by_target: dict[tuple[int, Kind], Multiplier] = {}
        self._multiplier_list: list[Multiplier] = []  # the modules of multiplier_modules, listed once at attach
        self._plans: list[_Plan] = []  # every target's layout and multipliers, fixed at attach
        self._pending: list[Multiplier] = []  # the multipliers the last loss() call appended a record to
        #: The last sample_ids tensor checked, (its version, the batch size, the device), and the ids made of it.
        self._checked_ids: tuple[Tensor, tuple[int, int, torch.device], Tensor] | None = None

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
    #: The kind that carries a set's inequalities (the slack form turns them into equalities).
    inequality_kind: ClassVar[Kind] = Kind.INEQUALITY

    def term(self, kind: Kind, lam: Tensor, c: Tensor) -> Tensor:
        """Elementwise multiplier term for constraint values ``c`` and multipliers ``lam``."""
        return lam * c

    def current_dual_lr(self) -> float:
        """The dual step size used by the next :meth:`after_step`."""
        return self.dual_lr

    def prox_penalty(self) -> float:
        r"""The :math:`\rho` of the multiplier term's proximal step (0: the linear term :math:`\lambda g`)."""
        return 0.0

    def _constraints(
        self, index: int, target: Target, g: Tensor | None, h: Tensor | None, ids: Tensor | None
    ) -> Iterator[tuple[Kind, Tensor | None]]:
        """``(kind, values)`` pairs carrying a multiplier."""
        yield Kind.INEQUALITY, g
        yield Kind.EQUALITY, h

    # ----------------------------------------------------------------- public helpers
    def mode(self, target: Target) -> Layout:
        """How ``target``'s multipliers are laid out: 'shared', 'mean' or 'per-sample' for outputs;
        'parameter-shared' (``multipliers="shared"``: one per constraint entry shared by the parameter's rows,
        on their mean violation) or 'parameter' (one per entry of every row, the exact form) for parameters."""
        if isinstance(target, ParameterTarget):
            shared = self.multiplier_mode == "shared" and self.shared_parameters
            return Layout.PARAMETER_SHARED if shared else Layout.PARAMETER
        return Layout(self.multiplier_mode)

    def multipliers(self) -> dict[str, Tensor]:
        """The current multipliers (detached clones), keyed ``'<target label> [<kind>]'``; a multiplier
        appears once its constraint has been evaluated (sized)."""
        out = {}
        for m in self._modules():
            if m.value.numel():
                name = f"{self.targets[m.index].label} [{m.kind.value}]"
                out[name if name not in out else f"{name} #{m.index}"] = m.value.detach().clone()
        return out

    def dual_parameters(self) -> Iterator[nn.Parameter]:
        """The multiplier tensors, as the parameters a dual optimizer steps."""
        return self.multiplier_modules.parameters()

    def _modules(self) -> list[Multiplier]:
        """The multiplier modules (listed once by :meth:`attach`: the loss and the dual step walk them every step)."""
        return self._multiplier_list

    # ----------------------------------------------------------------- attach / loss
    def _proximal(self, target: Target, kind: Kind) -> bool:
        """Whether ``primal="proximal"`` takes ``target``'s ``kind`` term out of the loss into a proximal step:
        inequalities of weights on an L1 ball, the one set whose multiplier term is not smooth."""
        return (
            self.primal == "proximal"
            and kind is Kind.INEQUALITY
            and isinstance(target, ParameterTarget)
            and isinstance(target.set, L1Ball)
        )

    def _attach(self) -> None:
        self._attach_multipliers()
        model = self._require_model()
        params = [
            p
            for t in self.targets
            if isinstance(t, ParameterTarget) and self._proximal(t, Kind.INEQUALITY)
            for p in t.tensors(model)
        ]
        if params:
            self._watch = self._watch_optimizer(params)

    def _attach_multipliers(self) -> None:
        if self.multiplier_mode == "per-sample" and self.num_samples is None:
            if any(isinstance(t, OutputTarget) for t in self.targets):
                raise ValueError(
                    f"strategy {self.name!r}: multipliers='per-sample' needs num_samples=<size of the training set> "
                    f"(one multiplier row per sample)."
                )
        for index, target in enumerate(self.targets):
            kinds = [self.inequality_kind] if target.set.has_inequalities else []
            for kind in kinds + ([Kind.EQUALITY] if target.set.has_equalities else []):
                module = Multiplier(index, kind, self.mode(target), self.num_samples)
                self.multiplier_modules[module.key] = module
                self._by_target[index, kind] = module
        self._multiplier_list = [m for m in self.multiplier_modules.values() if isinstance(m, Multiplier)]
        self._plans = [
            _Plan(
                index,
                target,
                self.mode(target),
                self._by_target.get((index, self.inequality_kind)),
                self._by_target.get((index, Kind.EQUALITY)),
            )
            for index, target in enumerate(self.targets)
        ]

    def _sample_ids(self, target: Target, sample_ids: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if sample_ids is None:
            raise ValueError(
                f"strategy {self.name!r} keeps one multiplier per training sample for {target.label}: pass the batch's "
                f"indices into the training set, strategy.loss(objective, outputs, sample_ids=idx)."
            )
        cached = self._checked_ids
        if cached is not None and cached[0] is sample_ids and cached[1] == (sample_ids._version, batch, device):
            return cached[2]  # the same ids tensor as the last call, unchanged (e.g. full-batch training): checked
        ids = torch.as_tensor(sample_ids, device=device)
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"sample_ids must be integer indices, got dtype {ids.dtype}.")
        ids = ids.reshape(-1).long()
        if ids.numel() != batch:
            raise ValueError(f"sample_ids has {ids.numel()} entries but the batch has {batch} samples.")
        assert self.num_samples is not None
        low, high = torch.stack(torch.aminmax(ids)).tolist() if ids.numel() else (0, 0)  # one reduction, one read
        if low < 0 or high >= self.num_samples:
            raise IndexError(
                f"sample_ids must lie in [0, num_samples={self.num_samples}); got values from {low} to {high}. Build "
                f"the strategy with num_samples = size of the training set."
            )
        if isinstance(sample_ids, Tensor) and not sample_ids.is_inference():  # remembered with its version counter
            # (an in-place change is checked again); an inference tensor has no version counter: checked every time
            self._checked_ids = (sample_ids, (sample_ids._version, batch, device), ids)
        return ids

    def _reduced_values(self, target: Target, rows: Tensor, mode: Layout) -> tuple[Tensor | None, Tensor | None]:
        """The constraint values the multipliers of ``mode`` act on (mean violation, batch mean or per row)."""
        g, h = constraint_values(target, rows)
        if mode is Layout.SHARED or mode is Layout.PARAMETER_SHARED:  # one multiplier per entry, on the mean violation
            g = None if g is None else g.clamp_min(0).mean(0)
            h = None if h is None else h.abs().mean(0)
        elif mode is Layout.MEAN:  # one multiplier per entry, on the batch mean of the values: on average
            g = None if g is None else g.mean(0)
            h = None if h is None else h.mean(0)
        else:  # per row: nothing to reduce, nothing to share between ranks
            return g, h
        if mode is not Layout.PARAMETER_SHARED and not self.linear_terms and _distributed.active():  # every rank
            g = None if g is None else _distributed.global_mean(g)
            h = None if h is None else _distributed.global_mean(h)
        return g, h

    def _loss_terms(self, model: nn.Module, outputs: Tensor | None, sample_ids: Tensor | None) -> Tensor | None:
        total: Tensor | None = None
        record = torch.is_grad_enabled()  # a loss evaluated under no_grad (validation) moves no multiplier
        pending: list[Multiplier] = []
        self._pending = pending
        linear = type(self).term is LagrangianStrategy.term
        proximal = self.primal == "proximal"
        for index, target, mode, inequality, equality in self._plans:
            rows = target_rows(target, model, outputs)
            ids = self._sample_ids(target, sample_ids, rows.shape[0], rows.device) if mode is Layout.PER_SAMPLE else None
            g, h = self._reduced_values(target, rows, mode)
            for kind, c in self._constraints(index, target, g, h, ids):
                if c is None or c.numel() == 0:
                    continue
                module = equality if kind is Kind.EQUALITY else inequality
                assert module is not None  # attach made one for every kind the set has
                lam = module.lookup(c, ids)
                if record:
                    module.records.append((c.detach(), ids))
                    pending.append(module)
                if proximal and self._proximal(target, kind):  # the term is the proximal step after the optimizer's
                    continue
                if linear and c.dim() == 1:
                    part = torch.dot(lam, c)  # lam . c of shared multipliers: one kernel and one backward node
                else:
                    part = self.term(kind, lam, c).sum()
                if ids is not None:
                    part = part / c.shape[0]
                total = part if total is None else total + part
        return total

    def _discard_loss(self) -> None:
        for module in self._pending:
            module.records.pop()
        self._pending = []

    def _discard_step(self) -> None:
        for module in self._multiplier_list:
            module.records.clear()  # in place: no nn.Module.__setattr__ on every step
        self._pending = []

    def _check_records(self, active: list[Multiplier], eta: float) -> None:
        r"""Raise FloatingPointError naming the step and constraint if a recorded defect is not finite, or if
        the dual step could overflow: :math:`\max|\nu| + \eta \sum |c|` bounds every updated multiplier, so
        a finite bound keeps every multiplier finite (one host synchronisation for all multipliers)."""
        if len(active) == 1:  # one multiplier and one defect (a shared scalar constraint): two item() reads
            (module,) = active  # instead of eight small kernels; anything else takes the path below
            lam, recs = module.tensor(), module.records
            if len(recs) == 1 and lam.numel() == 1 and recs[0][0].numel() == 1:
                bound = abs(lam.item()) + eta * abs(recs[0][0].item())  # NaN / Inf fail the test
                if bound <= half_max(lam.dtype):
                    return
        bounds = [m.step_bound(eta) for m in active]
        if len(bounds) == 1 and math.isfinite(bounds[0].item()):
            return
        if not bounds or bool(torch.isfinite(torch.stack([b.to(bounds[0]) for b in bounds])).all()):
            return
        self._refuse(active, eta)

    def _refuse(self, active: list[Multiplier], eta: float) -> NoReturn:
        """Raise the FloatingPointError of a refused dual step: a recorded defect that is not finite, else an overflow."""
        for m in active:
            if not all(bool(torch.isfinite(c).all()) for c, _ in m.records):
                raise FloatingPointError(
                    f"strategy {self.name!r}: the {m.kind.value} constraint values of {self.targets[m.index].label} are "
                    f"not finite at step {self.steps}; no multiplier was updated. Lower the learning rates or check "
                    f"the model."
                )
        raise FloatingPointError(
            f"strategy {self.name!r}: the dual step at step {self.steps} would overflow the multipliers of "
            f"{', '.join(self.targets[m.index].label for m in active)} (dual_lr {eta:g} times constraint values near "
            f"the largest {active[0].value.dtype} number); no multiplier was updated. Lower dual_lr or rescale the "
            f"constraint."
        )

    # ----------------------------------------------------------------- dual step
    def _after_step(self) -> None:
        """The dual step. No ``torch.no_grad()`` around it: the multipliers and the recorded defects carry no
        autograd history, so their in-place updates record nothing; what writes the model's parameters (the
        proximal step) disables gradients itself."""
        active = [m for m in self._multiplier_list if m.records]
        self._pending = []
        try:
            if self._watch is not None:  # with the multipliers of the step just taken, before they move
                self._apply_prox()
            eta = self.current_dual_lr()
            if not self._ascend_scalar(active, eta):
                self._dual_step(active, eta)
        finally:
            self._discard_step()
        self._after_dual_step()

    def _dual_step(self, active: list[Multiplier], eta: float) -> None:
        """Validate every record before touching any multiplier, combine the ranks' records, then ascend (or step the
        dual optimizer)."""
        self._check_records(active, eta)
        if _distributed.active():
            active = self._combine_ranks()
        if self._dual_factory is not None:
            self._optimizer_step(active, eta)
        else:
            for module in active:
                module.ascend(eta)

    def _ascend_scalar(self, active: list[Multiplier], eta: float) -> bool:
        r"""The dual step of a single multiplier with a single number recorded (a shared scalar constraint, in one
        process, plain ascent) with one host synchronisation: :math:`\nu + \eta c` is computed aside and read once
        (before the clip, which would turn a defect of -Inf into 0); if it is finite, it replaces the multiplier
        (clipped at 0 for inequalities), otherwise (a defect that is not finite, or an overflow) the step raises with
        the multiplier unchanged. The same operations as :meth:`Multiplier.ascend`, so the same value. False, having
        done nothing, in every other case."""
        if len(active) != 1 or self._dual_factory is not None:
            return False
        (module,) = active
        value, records = module.tensor(), module.records
        if len(records) != 1 or records[0][1] is not None or value.numel() != 1 or _distributed.active():
            return False
        c = records[0][0]
        new = torch.add(value, c if c.dtype == value.dtype and c.device == value.device else c.to(value), alpha=eta)
        if not math.isfinite(new.item()):
            self._refuse(active, eta)
        value.copy_(new.clamp_min_(0) if module.clipped else new)
        return True

    def _apply_prox(self) -> None:
        r"""``primal="proximal"``: each L1-ball weight row ``z`` after the optimizer's step becomes the proximal
        step of its multiplier term in the optimizer's metric (:mod:`strategies._lagrangian_prox`); with shared
        multipliers, :math:`\lambda \cdot` mean of the rows' :math:`g^+` is an exact penalty of weight
        :math:`\lambda / R`, whose proximal step is the exact penalty's."""
        if self._watch is None or self.primal != "proximal":
            return
        with torch.no_grad():  # it writes the model's parameters; the rest of the dual step needs no guard
            self._prox_rows(self._watch)

    def _prox_rows(self, watch: OptimizerWatch) -> None:
        """The proximal step of every L1-ball weight target, in the metric ``watch`` reads from the optimizer."""
        model = self._require_model()
        for index, target in enumerate(self.targets):
            if not self._proximal(target, Kind.INEQUALITY):
                continue
            assert isinstance(target, ParameterTarget) and isinstance(target.set, L1Ball)
            lam = self._by_target[index, Kind.INEQUALITY].value
            if lam.numel() == 0:  # its constraint was never evaluated: no term yet
                continue
            rows, steps = target.gather(model), watch.step_sizes(target, model)
            if steps is None:
                self._fall_back(target)
                return
            if not bool(torch.isfinite(rows).all()):
                raise FloatingPointError(
                    f"strategy {self.name!r}: {target.label} is not finite after the optimizer's step {self.steps}; "
                    f"lower the learning rate."
                )
            if self.mode(target) is Layout.PARAMETER_SHARED:
                new = exact_penalty_prox(target.set, rows, steps.to(rows), float(lam.sum()) / rows.shape[0])
            else:
                new = l1_multiplier_prox(rows, steps.to(rows), lam.to(rows), target.set.radius_like(rows), self.prox_penalty())
            for param, value in zip(target.tensors(model), target.split(new, model), strict=True):
                param.copy_(value)

    def _fall_back(self, target: Target) -> None:
        warn_at_caller(
            f"strategy {self.name!r}: no optimizer with a known step (Adam, AdamW, RMSprop, Adagrad, SGD) stepped "
            f"{target.label}, so its multiplier term has no metric for a proximal step; switching to "
            f"primal='gradient' (the term in the loss) from the next step."
        )
        self.primal = "gradient"

    def _dual(self) -> torch.optim.Optimizer:
        """The dual optimizer over every multiplier tensor (built on first use; its state recast to the
        multipliers' dtype and device when they moved)."""
        assert self._dual_factory is not None
        if self._dual_opt is None:
            opt = self._dual_factory(list(self.dual_parameters()))
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(f"dual_optimizer must build a torch.optim.Optimizer, got {type(opt).__name__}.")
            self._dual_opt = opt
        if any(m.moved for m in self._modules()):
            self._dual_opt.load_state_dict(self._dual_opt.state_dict())  # casts its state to the parameters
            for m in self._modules():
                m.moved = False
        return self._dual_opt

    def _optimizer_step(self, active: list[Multiplier], eta: float) -> None:
        """The dual step through ``dual_optimizer``: ``value.grad = -c`` (ascent as descent), ``step()``, clip.
        Per-sample tables get the batch's rows (the others a zero gradient)."""
        opt = self._dual()
        if self._dual_follows_lr:
            for group in opt.param_groups:
                group["lr"] = eta
        for module in active:
            module.set_descent_grad()
        opt.step()
        for module in active:
            module.value.grad = None
            module.clip_()
            if not bool(torch.isfinite(module.value).all()):
                raise FloatingPointError(
                    f"strategy {self.name!r}: the dual optimizer made the multipliers of "
                    f"{self.targets[module.index].label} non-finite at step {self.steps}; lower dual_lr."
                )

    def _combine_ranks(self) -> list[Multiplier]:
        """Under torch.distributed: every rank's defects, so that every rank takes the same dual step; returns
        the multipliers with records.

        Shared multipliers step on the mean over the ranks of each rank's batch mean (the global batch
        mean when the ranks' batches are equally large, as with DistributedSampler): one all-reduce for
        all of them. Per-sample multipliers step on every rank's (ids, defects), gathered in rank order.
        Parameter multipliers need nothing: DDP keeps the parameters, hence their defects, identical.
        Multipliers are visited in the order of the module table, the same on every rank; a rank that
        recorded nothing for one contributes no defect.
        """
        modules = [m for m in self._modules() if m.value.numel()]  # sized by the same first loss on every rank
        shared = [m for m in modules if m.layout in (Layout.SHARED, Layout.MEAN)]
        means = [m.mean_record() if m.records else torch.zeros_like(m.value) for m in shared]
        weights = [1.0 if m.records else 0.0 for m in shared]
        for module, mean in zip(shared, _distributed.all_mean(means, weights), strict=True):
            module.records = [] if mean is None else [(mean, None)]  # None: no rank recorded a defect
        for module in modules:
            if module.layout is not Layout.PER_SAMPLE:
                continue
            value = module.value
            if module.records:
                ids, c = module.rows_record()
            else:
                ids, c = torch.zeros(0, dtype=torch.long, device=value.device), value.new_zeros(0, value.shape[-1])
            ids, c = _distributed.all_gather_rows(ids, c)
            module.records = [(c, ids)] if ids.numel() else []
        return [m for m in self._modules() if m.records]

    def _after_dual_step(self) -> None:
        """Schedules after the dual step (penalty growth)."""

    # ----------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"multipliers": {m.key: m.value.detach().clone() for m in self._modules() if m.value.numel()}}
        if self._dual_opt is not None:
            state["dual_optimizer"] = clone_state(self._dual_opt.state_dict())
        return state

    def _check_saved_multipliers(self, lam: Any) -> None:
        if not isinstance(lam, dict):
            raise TypeError(f"strategy {self.name!r}: state['multipliers'] must be a dict of tensors, got {type(lam).__name__}.")
        for key, value in lam.items():
            module = self.multiplier_modules[key] if isinstance(key, str) and key in self.multiplier_modules else None
            if not isinstance(module, Multiplier):
                raise KeyError(
                    f"strategy {self.name!r}: multiplier {key!r} does not fit the {len(self.targets)} attached "
                    f"constraint(s); attach the same constraints before load_state_dict."
                )
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"strategy {self.name!r}: multiplier {key!r} must be a floating-point tensor.")
            if not bool(torch.isfinite(value).all()) or (module.kind.clipped and bool((value < 0).any())):
                raise ValueError(
                    f"strategy {self.name!r}: multiplier {key!r} in the state is "
                    f"{'negative' if bool(torch.isfinite(value).all()) else 'not finite'}; inequality multipliers are "
                    f">= 0 and all are finite. The state is corrupt: load one saved by strategy.state_dict()."
                )

    def _load_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "multipliers" not in state:
            raise KeyError(f"strategy {self.name!r}: state has no 'multipliers'; it comes from another strategy.")
        lam = state.pop("multipliers")
        dual = state.pop("dual_optimizer", None)
        if dual is not None and self._dual_factory is None:
            raise KeyError(
                f"strategy {self.name!r}: the state holds dual optimizer states but this strategy has no "
                f"dual_optimizer; build it with the same dual_optimizer before load_state_dict."
            )
        self._check_saved_multipliers(lam)
        self._load_extra(state)
        for module in self._modules():
            saved = lam.get(module.key)
            module.value.data = torch.zeros(0) if saved is None else saved.detach().clone()
            module.records, module.moved = [], False
        self._pending = []
        self._dual_opt = None
        if dual is not None:
            self._dual().load_state_dict(clone_state(dual))

    def _load_extra(self, state: dict[str, Any]) -> None:
        if state:
            raise KeyError(f"strategy {self.name!r} has no state entries {sorted(state)}.")


@register("lagrangian")
class Lagrangian(LagrangianStrategy):
    r""":math:`f + \sum \lambda g + \sum \mu h`; :math:`\lambda \leftarrow \max(0, \lambda + \eta g)`,
    :math:`\mu \leftarrow \mu + \eta h` after each step (simultaneous gradient descent-ascent).

    Options: ``dual_lr`` (:math:`\eta`), ``multipliers`` ('shared': on the batch mean of output
    constraints, i.e. the constraint holds on average; 'per-sample': the exact form, one row per
    training sample, needs ``num_samples`` and ``sample_ids``), ``primal`` ('gradient': every term in the
    loss; 'proximal': L1-ball weight rows take the proximal step of their term, see the module doc).
    """

    summary = "multipliers on g and h, dual gradient ascent clipped at 0; feasible at convergence, on training points"


@register("augmented-lagrangian")
class AugmentedLagrangian(LagrangianStrategy):
    r"""PHR augmented Lagrangian with penalty :math:`\rho`:

    :math:`f + \frac{1}{2\rho}\sum(\max(0, \lambda + \rho g)^2 - \lambda^2) + \sum(\mu h + \frac\rho2 h^2)`;
    after each step :math:`\lambda \leftarrow \max(0, \lambda + \eta g)`, :math:`\mu \leftarrow \mu + \eta h`
    with :math:`\eta` = ``dual_lr`` (``None``: the current :math:`\rho`), then
    :math:`\rho \leftarrow \rho \cdot` ``penalty_growth``.

    ``primal="proximal"``: L1-ball weight rows take the proximal step of their PHR term after the optimizer's
    step (a soft threshold whose weight :math:`\mu = \max(0, \lambda + \rho g)` is solved exactly at the
    result; see the module doc); the default ``"gradient"`` keeps it in the loss.

    Defaults ``penalty=10``, ``dual_lr=0.5``: a dual step half the plain Lagrangian's (whose default is 1),
    a twentieth of the penalty. A dual step equal to the penalty (the method of multipliers) diverges on
    Cooper's min-norm example with SGD and momentum; 0.1 converged there but left the mean-violation
    multiplier of an output L1 ball too slow against Adam's chatter (1.5e-2 of the scale after 1000 steps).
    """

    summary = "PHR augmented Lagrangian: multipliers plus quadratic penalty rho; dual step rho, rho may grow"
    linear_terms = False
    shared_parameters = False

    def __init__(
        self,
        *,
        penalty: float = 10.0,
        dual_lr: float | None = 0.5,
        multipliers: Multipliers = "shared",
        num_samples: int | None = None,
        penalty_growth: float = 1.0,
        dual_optimizer: DualOptimizer | None = None,
        dual_kp: float = 4.0,
        primal: Primal = "gradient",
    ) -> None:
        self.penalty = _positive(penalty, "penalty")
        super().__init__(
            dual_lr=self.penalty if dual_lr is None else dual_lr,
            multipliers=multipliers,
            num_samples=num_samples,
            dual_optimizer=dual_optimizer,
            dual_kp=dual_kp,
            primal=primal,
        )
        self.dual_lr_option = dual_lr
        self.penalty_growth = _positive(penalty_growth, "penalty_growth")

    def current_dual_lr(self) -> float:
        return self.penalty if self.dual_lr_option is None else self.dual_lr

    def prox_penalty(self) -> float:
        return self.penalty

    def term(self, kind: Kind, lam: Tensor, c: Tensor) -> Tensor:
        rho = self.penalty
        if kind is Kind.INEQUALITY:
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
