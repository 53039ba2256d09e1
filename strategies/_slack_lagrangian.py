r"""``slack-lagrangian``: inequalities as equalities :math:`g + s^2 = 0` with slacks the strategy owns.

The slack variables are :class:`Slack` modules of the strategy (``strategy.slack_modules``), not
parameters of the model: attaching changes no name, parameter, buffer or hook of the model, the
model's optimizer can be built right after :meth:`~strategies.Strategy.attach`, and a checkpoint is
``model.state_dict()`` plus ``strategy.state_dict()`` (which holds the slacks and their optimizer).
The slacks receive their gradients from the user's ``loss.backward()`` like the model, and the
strategy steps them in :meth:`~strategies.Strategy.after_step` with its own optimizer
(``slack_optimizer``, default Adam with ``slack_lr=1e-2``), then clears their gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from constrain import OutputTarget, ParameterTarget
from strategies import _distributed
from strategies._base import Target, constraint_values
from strategies._dual import DualOptimizer
from strategies._lagrangian import LagrangianStrategy, Multipliers
from strategies._multipliers import Kind, clone_state
from strategies._options import check_choice
from strategies._options import check_positive as _positive
from strategies._registry import register

#: Floor under :math:`s^2` at initialisation: a slack at exactly 0 is a stationary point.
SLACK_FLOOR = 1e-4
_SLACK_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def slack_dtype(dtype: torch.dtype) -> torch.dtype:
    """Slacks are kept in at least float32 (a master copy, as in mixed precision: Adam's epsilon and small
    steps vanish in float16), and cast to the constraint values' dtype in the loss."""
    return torch.promote_types(dtype, torch.float32)


def initial_slack(g: Tensor) -> Tensor:
    r""":math:`\sqrt{\max(-g, 0) + \epsilon}`; a non-finite defect (a NaN batch) gets the floor, so that a
    step skipped or refused for non-finite values leaves no NaN in the slacks."""
    slack = (-g).clamp_min(0)
    return torch.where(torch.isfinite(slack), slack, 0).add(SLACK_FLOOR).sqrt()


class Slack(nn.Module):
    """The slacks of one target: ``value`` (one per inequality of every weight row, one per inequality of the
    batch mean for shared output multipliers, or a ``(num_samples, k)`` table) and ``seen``, which rows were
    initialised from their first defect (output targets)."""

    seen: Tensor

    def __init__(self, index: int, value: Tensor, rows: int) -> None:
        super().__init__()
        self.index = index
        self.value = nn.Parameter(value)
        self.register_buffer("seen", torch.zeros(rows, dtype=torch.bool, device=value.device))

    def extra_repr(self) -> str:
        return f"index={self.index}, shape={tuple(self.value.shape)}"


def _slack_factory(spec: DualOptimizer | None, lr: float) -> Callable[[list[Tensor]], torch.optim.Optimizer]:
    """How to build the slacks' optimizer: ``None`` (Adam), ``"adam"`` / ``"sgd"`` or a torch optimizer class
    (built with ``lr=slack_lr``), or a factory ``params -> optimizer``."""
    if spec is None:
        spec = "adam"
    if isinstance(spec, str):  # else a torch optimizer class or a factory
        spec = _SLACK_OPTIMIZERS[check_choice("slack_optimizer", spec, tuple(_SLACK_OPTIMIZERS), "slack-lagrangian")]
    if isinstance(spec, type):
        if not issubclass(spec, torch.optim.Optimizer):
            raise TypeError(f"slack_optimizer class must subclass torch.optim.Optimizer, got {spec.__name__}.")
        cls: Callable[..., torch.optim.Optimizer] = spec
        return lambda params: cls(params, lr=lr)
    if callable(spec):
        return spec
    raise TypeError(f"slack_optimizer must be a name, a torch optimizer class or a factory, got {type(spec).__name__}.")


@register("slack-lagrangian")
class SlackLagrangian(LagrangianStrategy):
    r"""Inequalities as equalities :math:`g + s^2 = 0` with slacks :math:`s` owned by the strategy:

    :math:`f + \sum \nu (g + s^2) + \sum \mu h`; :math:`\nu \leftarrow \nu + \eta (g + s^2)` and
    :math:`\mu \leftarrow \mu + \eta h` (no clipping). The slacks get their gradient from the user's
    ``backward()`` and are stepped in :meth:`after_step` by ``slack_optimizer`` (default
    ``torch.optim.Adam`` with ``slack_lr=1e-2``; a name 'adam' / 'sgd', a class built with
    ``lr=slack_lr``, or a factory ``params -> optimizer``). Parameter slacks start at
    :math:`s = \sqrt{\max(-g, 0) + \epsilon}` with :math:`\epsilon = 10^{-4}` (a slack at exactly 0
    has zero gradient and could never grow), output slacks the same on the first batch each sample
    appears in (sized then: the output width is not known before).

    ``penalty`` :math:`\rho \ge 0` adds :math:`\frac\rho2 (g + s^2)^2 + \frac\rho2 h^2` (0: the plain
    form). Without it the saddle is degenerate at an inactive constraint (the Lagrangian's
    curvature in :math:`s` is :math:`2\nu = 0` there) and :math:`(s^2, \nu)` cycle like a
    predator-prey system under gradient descent-ascent, damped only through the objective;
    :math:`\rho > 0` removes the cycle, so the default is :math:`\rho = 1` (the penalized form).

    ``output_width`` (optional): the number of outputs per sample, so that output slacks are sized by
    :meth:`attach` and a batch of another width is an error. Under ``torch.distributed`` the slacks
    are initialised identically on every rank (batch means all-reduced, per-sample first defects
    all-gathered) and their gradients are averaged over the ranks before the slack step.
    """

    summary = "inequalities as g + s^2 = 0 with slacks owned and stepped by the strategy; unclipped multipliers"
    inequality_kind = Kind.SLACK
    slack_floor = SLACK_FLOOR

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
        slack_optimizer: DualOptimizer | None = None,
        slack_lr: float = 1e-2,
    ) -> None:
        super().__init__(
            dual_lr=dual_lr, multipliers=multipliers, num_samples=num_samples, dual_optimizer=dual_optimizer, dual_kp=dual_kp
        )
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not math.isfinite(penalty) or penalty < 0:
            raise ValueError(f"penalty must be >= 0 and finite, got {penalty}.")
        if output_width is not None and (
            isinstance(output_width, bool) or not isinstance(output_width, int) or output_width <= 0
        ):
            raise ValueError(f"output_width must be a positive int (outputs per sample), got {output_width!r}.")
        self.penalty = float(penalty)
        self.output_width = output_width
        self.linear_terms = self.penalty == 0  # type: ignore[misc]  # an instance value of the class default
        self.slack_lr = _positive(slack_lr, "slack_lr")
        self.slack_optimizer = slack_optimizer
        self._slack_factory = _slack_factory(slack_optimizer, self.slack_lr)
        self._slack_follows_lr = slack_optimizer is None or isinstance(slack_optimizer, (str, type))
        #: One :class:`Slack` per target with inequalities, keyed by the target's index, created by :meth:`attach`.
        self.slack_modules = nn.ModuleDict()
        self._slack_opt: torch.optim.Optimizer | None = None
        self._slack_moved = False
        self._all_seen: set[int] = set()  # output targets whose every sample has its slack initialised

    def term(self, kind: Kind, lam: Tensor, c: Tensor) -> Tensor:
        if self.penalty == 0:
            return lam * c
        return lam * c + (0.5 * self.penalty) * c.square()

    # ----------------------------------------------------------------- slacks
    def _attach(self) -> None:
        super()._attach()
        model = self._require_model()
        reference = next(iter(model.parameters()), None)
        factory: dict[str, Any] = {} if reference is None else {"device": reference.device, "dtype": slack_dtype(reference.dtype)}
        for index, target in enumerate(self.targets):
            if not target.set.has_inequalities:
                continue
            rows = self.num_samples if self.mode(target) == "per-sample" and self.num_samples is not None else 1
            if isinstance(target, ParameterTarget):
                with torch.no_grad():
                    g, _ = constraint_values(target, target.gather(model).detach())
                assert g is not None
                value = initial_slack(g).to(slack_dtype(g.dtype))
                rows = 1
            elif self.output_width is not None:  # sized now, initialised from the first batch
                with torch.no_grad():
                    probe = target.set.inequality(torch.zeros(1, self.output_width, **factory))
                assert probe is not None  # the set has inequalities
                width = probe.shape[-1]
                shape = (rows, width) if self.mode(target) == "per-sample" else (width,)
                value = torch.full(shape, math.sqrt(SLACK_FLOOR), **factory)
            else:  # sized on the first batch (the output width is not known before)
                value = torch.empty(0, **factory)
            module = Slack(index, value, rows)
            if isinstance(target, ParameterTarget):
                module.seen.fill_(True)
            self.slack_modules[str(index)] = module

    def slack_parameters(self) -> Iterator[nn.Parameter]:
        """The slack tensors (stepped by the strategy's own ``slack_optimizer`` in :meth:`after_step`)."""
        return self.slack_modules.parameters()

    def slack(self, index: int) -> Tensor:
        """The slack parameter of the ``index``-th constraint target."""
        self._require_model()
        module = self.slack_modules[str(index)]
        assert isinstance(module, Slack)
        return module.value

    def _slack_rows(self, index: int, target: Target, g: Tensor, ids: Tensor | None) -> Tensor:
        """The slacks of this batch's constraint values ``g`` (sized and initialised on first use)."""
        module = self.slack_modules[str(index)]
        assert isinstance(module, Slack)
        value = module.value
        if value.numel() == 0:  # first batch of an output target: size the slacks
            shape = (int(module.seen.shape[0]), int(g.shape[-1])) if ids is not None else tuple(g.shape)
            value.data = torch.full(shape, math.sqrt(SLACK_FLOOR), dtype=slack_dtype(g.dtype), device=g.device)
        elif value.shape[-1] != g.shape[-1]:
            raise ValueError(
                f"slack-lagrangian: the slacks of {target.label} hold {value.shape[-1]} inequalities per sample "
                f"(output_width={self.output_width}), but these outputs give {g.shape[-1]}; pass the model's output width."
            )
        if value.dtype != slack_dtype(g.dtype) or value.device != g.device:  # follow the model (e.g. to float64)
            value.data = value.data.to(device=g.device, dtype=slack_dtype(g.dtype))
            module.seen.data = module.seen.data.to(g.device)
            self._slack_moved = True
        if isinstance(target, OutputTarget) and index not in self._all_seen:
            self._initialise(module, g.detach(), ids)
        return value if ids is None else value[ids.to(value.device)]

    @torch.no_grad()
    def _initialise(self, module: Slack, g: Tensor, ids: Tensor | None) -> None:
        """Start each output slack from its first defect (shared: the batch mean over every rank)."""
        value, seen = module.value, module.seen
        if ids is None:
            if not bool(seen.all()):
                mean = _distributed.all_mean([g])[0]
                assert mean is not None
                value.copy_(initial_slack(mean))
                seen.fill_(True)
        else:
            fresh = ~seen[ids.to(seen.device)]
            new_ids, values = ids[fresh.to(ids.device)], initial_slack(g[fresh.to(g.device)])
            if _distributed.active():  # every rank initialises every rank's fresh samples
                new_ids, values = _distributed.all_gather_rows(new_ids, values)
            if new_ids.numel():
                value[new_ids.to(value.device)] = values.to(value)
                seen[new_ids.to(seen.device)] = True
        if bool(seen.all()):
            self._all_seen.add(module.index)

    def _constraints(
        self, index: int, target: Target, g: Tensor | None, h: Tensor | None, ids: Tensor | None
    ) -> Iterator[tuple[Kind, Tensor | None]]:
        if g is not None and g.numel():
            s = self._slack_rows(index, target, g, ids)
            yield Kind.SLACK, g + s.to(g).square()  # an equality: its multiplier is not clipped
        yield Kind.EQUALITY, h

    # ----------------------------------------------------------------- the slack step
    def _slack_optimizer(self) -> torch.optim.Optimizer:
        if self._slack_opt is None:
            opt = self._slack_factory(list(self.slack_parameters()))
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(f"slack_optimizer must build a torch.optim.Optimizer, got {type(opt).__name__}.")
            self._slack_opt = opt
        if self._slack_moved:
            self._slack_opt.load_state_dict(self._slack_opt.state_dict())  # casts its state to the slacks
            self._slack_moved = False
        return self._slack_opt

    @torch.no_grad()
    def _step_slacks(self) -> None:
        """One step of the slacks' optimizer on the gradients ``backward()`` left (averaged over the ranks)."""
        params = [p for p in self.slack_parameters() if p.grad is not None]
        if not params:
            return
        if _distributed.active():
            for p, mean in zip(params, _distributed.all_mean([p.grad for p in params]), strict=True):  # type: ignore[misc]  # grads checked above
                assert mean is not None
                p.grad.copy_(mean)  # type: ignore[union-attr]  # checked above
        opt = self._slack_optimizer()
        if self._slack_follows_lr:  # set before each step, so that a schedule of slack_lr applies
            for group in opt.param_groups:
                group["lr"] = self.slack_lr
        opt.step()
        for p in params:
            p.grad = None

    def _after_step(self) -> None:
        self._step_slacks()
        super()._after_step()

    def _discard_step(self) -> None:
        super()._discard_step()
        for p in self.slack_parameters():
            p.grad = None

    # ----------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        state = super()._state()
        slacks = {key: m for key, m in self.slack_modules.items() if isinstance(m, Slack)}
        state["slacks"] = {key: m.value.detach().clone() for key, m in slacks.items()}
        state["slack_seen"] = {key: m.seen.detach().clone() for key, m in slacks.items()}
        if self._slack_opt is not None:
            state["slack_optimizer"] = clone_state(self._slack_opt.state_dict())
        return state

    def _load_extra(self, state: dict[str, Any]) -> None:
        state = dict(state)
        slacks, seen, opt_state = state.pop("slacks", None), state.pop("slack_seen", None), state.pop("slack_optimizer", None)
        if not isinstance(slacks, dict) or not isinstance(seen, dict) or slacks.keys() != set(self.slack_modules):
            raise KeyError(
                f"strategy {self.name!r}: the state's 'slacks' do not fit the attached constraints (slacks for targets "
                f"{sorted(self.slack_modules)}); pass the state_dict of a slack-lagrangian on the same constraints."
            )
        super()._load_extra(state)
        for key, module in self.slack_modules.items():
            value, flags = slacks[key], seen.get(key)
            if not isinstance(value, Tensor) or not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                raise ValueError(f"strategy {self.name!r}: state['slacks'][{key!r}] must be a finite floating-point tensor.")
            if not isinstance(flags, Tensor) or flags.dtype != torch.bool:
                raise ValueError(f"strategy {self.name!r}: state['slack_seen'][{key!r}] must be a bool tensor.")
            module.value.data = value.detach().clone()
            module.seen.data = flags.detach().clone()
            module.value.grad = None
        self._all_seen = set()
        self._slack_opt, self._slack_moved = None, False
        if opt_state is not None:
            self._slack_optimizer().load_state_dict(clone_state(opt_state))
