r"""Lagrange multipliers as modules: one :class:`Multiplier` per (constraint target, constraint kind).

A multiplier is an ``nn.Module`` holding one parameter ``value`` (no autograd: the primal loss
treats it as a constant) and the defects its constraint recorded since the last dual step. Its
layout says how the tensor is indexed:

* ``Layout.PARAMETER``: one multiplier per constraint entry of every row of a parameter, ``(rows, k)``;
* ``Layout.PARAMETER_SHARED`` / ``Layout.SHARED``: one per constraint entry, ``(k,)``, on the mean
  violation over the rows (weights) or the batch (outputs);
* ``Layout.MEAN``: one per constraint entry on the batch mean of the values (holds on average);
* ``Layout.PER_SAMPLE``: a table ``(num_samples, k)`` indexed by the batch's sample ids.

The tensor is sized on first use (an output's width is known only on the first batch) by
replacing ``value.data``, so the parameter object, and a dual optimizer built over it, stay the
same; it follows the device and dtype of the constraint values the same way.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import torch
from torch import Tensor, nn


class Kind(enum.Enum):
    """The constraint a multiplier prices."""

    INEQUALITY = "inequality"  #: g <= 0; its multiplier is clipped at 0
    EQUALITY = "equality"  #: h = 0
    SLACK = "slack"  #: g + s^2 = 0 (slack form); an equality, not clipped

    @property
    def clipped(self) -> bool:
        """Whether the multiplier is projected onto :math:`\\ge 0` after each dual step."""
        return self is Kind.INEQUALITY


class Layout(str, enum.Enum):
    """How a target's multipliers are laid out (see the module doc)."""

    SHARED = "shared"
    MEAN = "mean"
    PER_SAMPLE = "per-sample"
    PARAMETER = "parameter"
    PARAMETER_SHARED = "parameter-shared"


#: One recorded defect: the constraint values (detached) and, for per-sample tables, the sample ids.
Record = tuple[Tensor, Tensor | None]

_HALF_MAX: dict[torch.dtype, float] = {}


def half_max(dtype: torch.dtype) -> float:
    """Half the largest finite number of the floating-point ``dtype`` (a dual step bounded by it cannot overflow);
    cached, since the dual step asks on every step."""
    value = _HALF_MAX.get(dtype)
    if value is None:
        value = _HALF_MAX[dtype] = 0.5 * torch.finfo(dtype).max
    return value


class Multiplier(nn.Module):
    """The multipliers of one kind of one constraint target (``index`` into the strategy's targets)."""

    def __init__(self, index: int, kind: Kind, layout: Layout, num_samples: int | None = None) -> None:
        super().__init__()
        if layout is Layout.PER_SAMPLE and num_samples is None:
            raise ValueError("a per-sample multiplier table needs num_samples.")
        self.index, self.kind, self.layout, self.num_samples = index, kind, layout, num_samples
        self.clipped = kind.clipped  # read on every dual step: an attribute, not the enum's property
        self.value = nn.Parameter(torch.zeros(0), requires_grad=False)
        self.records: list[Record] = []
        self.moved = False  # set when value changed device or dtype: a dual optimizer must recast its state

    @property
    def key(self) -> str:
        """The name of this multiplier in :meth:`Strategy.state_dict` (``'<index>:<kind>'``)."""
        return f"{self.index}:{self.kind.value}"

    def tensor(self) -> nn.Parameter:
        """``value``, read from the parameter table directly: the loss and the dual step read it on every step, and
        ``nn.Module.__getattr__`` (reached after a failed attribute lookup) costs as much as a small kernel."""
        value = self._parameters["value"]
        assert value is not None  # registered in __init__; state loads and moves replace its data, never the object
        return value

    def extra_repr(self) -> str:
        return f"index={self.index}, kind={self.kind.value}, layout={self.layout.value}, shape={tuple(self.value.shape)}"

    def lookup(self, c: Tensor, ids: Tensor | None) -> Tensor:
        """The multipliers for constraint values ``c`` (the batch's rows of a per-sample table), on ``c``'s
        device and dtype; sized as zeros on first use."""
        value = self.tensor()
        if ids is None and value.shape == c.shape and value.dtype == c.dtype and value.device == c.device:
            return value  # the steady state of a shared or parameter multiplier: nothing to size or move
        shape = (
            tuple(c.shape)
            if self.num_samples is None or self.layout is not Layout.PER_SAMPLE
            else (self.num_samples, c.shape[-1])
        )
        if value.numel() == 0 and value.shape != shape:
            value.data = c.new_zeros(shape)
        elif tuple(value.shape) != shape:
            raise ValueError(
                f"the multipliers {self.key!r} have shape {tuple(value.shape)} but the constraint now has shape "
                f"{shape}; the model or the constraint changed since they were created."
            )
        elif value.device != c.device or value.dtype != c.dtype:
            value.data = value.data.to(c)
            self.moved = True
        return value if ids is None else value[ids]

    def mean_record(self) -> Tensor:
        """The mean of the recorded defects (shared and parameter layouts)."""
        recs = self.records
        return recs[0][0] if len(recs) == 1 else torch.stack([r[0] for r in recs]).mean(0)

    def rows_record(self) -> tuple[Tensor, Tensor]:
        """All recorded ``(ids, defects)`` of a per-sample table, concatenated (one record: itself), on the table's
        device and dtype."""
        records, value = self.records, self.tensor()
        if len(records) == 1:
            c, ids = records[0]
            assert ids is not None, "per-sample records carry sample ids"
        else:
            id_list = [r[1] for r in records]
            assert all(i is not None for i in id_list), "per-sample records carry sample ids"
            ids, c = torch.cat(id_list), torch.cat([r[0] for r in records])  # type: ignore[arg-type]  # None excluded above
        if ids.device != value.device:
            ids = ids.to(value.device)
        return ids, c if c.dtype == value.dtype and c.device == value.device else c.to(value)

    def step_bound(self, eta: float) -> Tensor:
        r""":math:`\max|\nu| + \eta \sum |c|` over the recorded defects (per-sample tables: the rows they update), a
        0-d tensor: it bounds every multiplier the dual step makes, so a finite bound means a finite step (not finite
        if a defect is not). Norms, not ``abs`` then a reduction: one kernel each."""
        value = self.tensor()
        lam = value if self.records[0][1] is None else value[self.rows_record()[0]]
        total = torch.linalg.vector_norm(self.records[0][0], 1)
        for c, _ in self.records[1:]:
            total = total + torch.linalg.vector_norm(c, 1)
        return torch.add(torch.linalg.vector_norm(lam, math.inf), total.to(lam), alpha=eta)

    def ascend(self, eta: float) -> None:
        r"""Plain dual ascent on the records: :math:`\nu \leftarrow \nu + \eta c` (clipped at 0 for inequalities).
        No autograd to disable: the multipliers do not require grad and the records are detached."""
        value = self.tensor()
        if self.records[0][1] is None:
            c = self.mean_record()
            value.add_(c if c.dtype == value.dtype and c.device == value.device else c.to(value), alpha=eta)
            if self.clipped:
                value.clamp_min_(0)
            return
        ids, c = self.rows_record()
        value.index_add_(0, ids, c, alpha=eta)
        if self.clipped:
            if ids.numel() >= value.shape[0]:  # a batch as large as the table: one pass over it (the rows not in the
                value.clamp_min_(0)  # batch are >= 0 already, so the same values) instead of gather, clamp, scatter
            else:
                value[ids] = value[ids].clamp_min(0)

    def set_descent_grad(self) -> None:
        """``value.grad = -c`` (ascent written as descent, for a torch optimizer); zero on rows not in a batch."""
        value = self.value
        if self.records[0][1] is None:
            value.grad = self.mean_record().to(value).neg()
        else:
            ids, c = self.rows_record()
            value.grad = torch.zeros_like(value).index_add_(0, ids, c, alpha=-1)

    def clip_(self) -> None:
        if self.clipped:
            self.value.clamp_min_(0)


def clone_state(state: Any) -> Any:
    """A deep copy of an optimizer state_dict (tensors cloned), so that saved and live states never alias."""
    if isinstance(state, Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: clone_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [clone_state(v) for v in state]
    return state
