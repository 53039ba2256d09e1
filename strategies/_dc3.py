r"""DC3 (Donti, Rolnick, Kolter, ICLR 2021): equality completion, then gradient correction.

For outputs constrained to a polyhedron :math:`\{y \in \mathbb{R}^n : A y = b,\ G y \le h\}` with
:math:`A` of shape ``(m, n)`` (``b`` and ``h`` may differ per sample):

1. **Completion.** :math:`m` of the variables (``completed``; by default the last :math:`m`) are
   solved from the equalities, :math:`y_c = A_c^{-1}(b - A_f z)`, where :math:`A_f, A_c` are the
   columns of :math:`A` of the free and the completed variables; the network's outputs at the free
   positions are :math:`z`. Every completed :math:`y` satisfies :math:`A y = b` exactly (up to
   rounding), on every input.
2. **Correction.** A fixed number of gradient steps on :math:`\|\max(G y - h, 0)\|^2` taken in
   :math:`z` (so along the equality manifold): with :math:`G y - h = G_e z - h_e`,
   :math:`G_e = G_f - G_c A_c^{-1} A_f`, :math:`h_e = h - G_c A_c^{-1} b`, the step is
   :math:`v \leftarrow \gamma\, 2 G_e^\top \max(G_e z - h_e, 0) + \mu v`, :math:`z \leftarrow z - v`.
   The steps are unrolled in training (the loss differentiates through them); in evaluation
   (``model.eval()``) they stop early once the largest violation of the batch is at most ``tol``.
3. **Soft loss.** The objective plus
   :math:`w\,(1 - \phi)\,\|\max(G y - h, 0)\|_2 + w\,\phi\,\|A y - b\|_2`, averaged over the batch
   (norms, not squares, as in DC3's code).

The defaults are DC3's published settings for its QP benchmark: 10 correction steps, step size
:math:`\gamma = 10^{-7}`, momentum :math:`\mu = 0.5`, soft weight :math:`w = 10` split evenly
(:math:`\phi = 0.5`), early stop at ``1e-4``. The correction is gradient descent on the violation,
so inequalities are only as satisfied as those steps make them: DC3 guarantees the equalities, not
the inequalities. DC3's code completes a random subset of the variables: give its indices as
``completed`` to reproduce it. Which subset is completed changes :math:`G_e`, hence both the
landscape the network learns on and the size of a correction step of a given :math:`\gamma` (the block
:math:`A_c` must be invertible).

The math is also available on plain tensors: :class:`Completion`, :func:`dc3_correct`,
:func:`dc3_soft_penalty`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from constrain import OutputTarget, Polyhedron
from strategies._base import Strategy, Target
from strategies._registry import register

#: Largest condition number of the completed block :math:`A_c` that :class:`Completion` accepts.
MAX_CONDITION = 1e10


# ====================================================================== right-hand sides
def linear_parts(constraint_set: Polyhedron) -> tuple[Tensor | None, Any, Tensor | None, Any]:
    """``(A, b, G, h)`` of a polyhedron (None where absent); ``b`` and ``h`` as the set holds them."""
    return constraint_set.A, constraint_set.b, constraint_set.G, constraint_set.h


def rhs_rows(value: Tensor, rows: Tensor, name: str) -> Tensor:
    """A bound right-hand side, ``(m,)`` or ``(batch, m)`` (checked by the set), in ``rows``' dtype and
    device; a per-sample side must have one row per output row."""
    if value.dim() == 2 and value.shape[0] not in (1, rows.shape[0]):
        raise ValueError(
            f"the right-hand side {name} has {value.shape[0]} rows but the outputs have {rows.shape[0]}; "
            f"give one row of {name} per sample (or a callable of the model's input)."
        )
    return value.to(device=rows.device, dtype=rows.dtype)


def check_matrix(M: Any, name: str, n: int | None = None) -> Tensor:
    """``M`` as a finite float64 matrix; ``n``: the number of columns it must have."""
    if not isinstance(M, Tensor):
        raise TypeError(f"{name} must be a tensor of shape (rows, n), got {type(M).__name__}.")
    if M.dim() != 2 or M.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty matrix of shape (rows, n), got shape {tuple(M.shape)}.")
    if n is not None and M.shape[1] != n:
        raise ValueError(f"{name} has {M.shape[1]} columns but the outputs have {n} entries per row.")
    M = M.detach().to(torch.float64)
    if not bool(torch.isfinite(M).all()):
        raise ValueError(f"{name} contains NaN or Inf.")
    return M


# ====================================================================== the math on plain tensors
@dataclass(frozen=True)
class Completion:
    r"""Equality completion of ``m`` of ``n`` variables: :math:`y_f = z`, :math:`y_c = A_c^{-1}(b - A_f z)`.

    Built once from ``A`` ``(m, n)`` (float64; cast to the rows' dtype when applied) and the indices of
    the completed variables (``completed``; by default the last ``m``). ``G`` ``(k, n)`` (optional)
    gives :math:`G_e = G_f - G_c A_c^{-1} A_f` and :math:`H = G_c A_c^{-1}` for :math:`h_e = h - b H^\top`.
    """

    free: int
    K: Tensor  # A_c^{-1} A_f, (m, n - m)
    A_c_inv: Tensor  # (m, m)
    G_eff: Tensor | None  # (k, n - m)
    H: Tensor | None  # G_c A_c^{-1}, (k, m)
    order: Tensor | None = None  # the free indices, then the completed ones (None: already in that order)
    inverse: Tensor | None = None  # argsort(order): puts (z, completed) back in the variables' order

    @classmethod
    def of(cls, A: Tensor, G: Tensor | None = None, completed: Sequence[int] | None = None) -> Completion:
        A = check_matrix(A, "A")
        m, n = A.shape
        if m >= n:
            raise ValueError(
                f"A has {m} rows for {n} variables: completion needs fewer equalities than variables "
                f"(m < n) so that some variables stay free."
            )
        order = completion_order(completed, m, n)
        ordered = A if order is None else A[:, order]
        A_f, A_c = ordered[:, : n - m], ordered[:, n - m :]
        cond = float(torch.linalg.cond(A_c))
        if not math.isfinite(cond) or cond > MAX_CONDITION:
            which = "the last m variables" if order is None else "the variables in completed"
            raise ValueError(
                f"the columns of A of {which} form a singular block (condition number {cond:.3g}); give "
                f"completed: the indices of {m} variables whose columns of A are linearly independent."
            )
        A_c_inv = torch.linalg.inv(A_c)
        K = A_c_inv @ A_f
        G_eff = H = None
        if G is not None:
            G = check_matrix(G, "G", n)
            if order is not None:
                G = G[:, order]
            H = G[:, n - m :] @ A_c_inv
            G_eff = G[:, : n - m] - G[:, n - m :] @ K
        return cls(n - m, K, A_c_inv, G_eff, H, order, None if order is None else torch.argsort(order))

    def free_part(self, rows: Tensor) -> Tensor:
        """The free variables ``z`` ``(batch, n - m)``: the entries of ``rows`` at the free positions."""
        return rows[:, : self.free] if self.order is None else rows[:, self.order[: self.free].to(rows.device)]

    def complete(self, z: Tensor, b: Tensor) -> Tensor:
        """``y`` ``(batch, n)`` from the free variables ``z`` ``(batch, n - m)`` and ``b`` ``(m,)`` or ``(batch, m)``."""
        K, A_c_inv = self.K.to(z), self.A_c_inv.to(z)
        completed = b @ A_c_inv.T - z @ K.T
        y = torch.cat([z, completed.expand(z.shape[0], -1)], dim=-1)
        if self.inverse is None:
            return y
        return y[:, self.inverse.to(y.device)]

    def effective_h(self, h: Tensor, b: Tensor) -> Tensor:
        r""":math:`h_e = h - b H^\top`, the inequality bound on :math:`G_e z`."""
        assert self.H is not None
        return h - b @ self.H.to(b).T


def completion_order(completed: Sequence[int] | None, m: int, n: int) -> Tensor | None:
    """The permutation "free indices (ascending), then ``completed``" of ``range(n)``; None for the default
    (the last ``m`` completed, no permutation needed). Checks that ``completed`` names ``m`` distinct
    variables."""
    if completed is None:
        return None
    try:
        chosen = [operator.index(i) for i in completed]
    except TypeError:
        raise TypeError(f"completed must be a sequence of int variable indices, got {completed!r}.") from None
    if len(chosen) != m or len(set(chosen)) != m or not all(0 <= i < n for i in chosen):
        raise ValueError(
            f"completed must list {m} distinct variable indices in [0, {n}) (one per equality), got {list(completed)!r}."
        )
    free = sorted(set(range(n)) - set(chosen))
    if chosen == list(range(n - m, n)):
        return None
    return torch.tensor(free + chosen, dtype=torch.long)


def dc3_correct(
    z: Tensor, G: Tensor, h: Tensor, steps: int, lr: float, momentum: float, tol: float | None = None
) -> tuple[Tensor, int]:
    r"""DC3's correction: ``steps`` momentum gradient steps on :math:`\|\max(G z - h, 0)\|^2` in ``z``.

    ``G`` ``(k, d)``, ``h`` ``(k,)`` or ``(batch, k)``, ``z`` ``(batch, d)`` (for the equality-constrained
    case, pass :math:`G_e, h_e` of :class:`Completion`). With ``tol``, stop before a step once the
    largest violation is at most ``tol``. Returns the corrected ``z`` and the number of steps taken.
    Differentiable (the steps are unrolled).
    """
    G = G.to(z)
    velocity: Tensor | float = 0.0
    taken = 0
    for _ in range(steps):
        residual = (z @ G.T - h).clamp_min(0)
        if tol is not None and float(residual.detach().amax()) <= tol:
            break
        velocity = lr * 2.0 * (residual @ G) + momentum * velocity
        z = z - velocity
        taken += 1
    return z, taken


def dc3_soft_penalty(
    y: Tensor, A: Tensor | None, b: Tensor | None, G: Tensor | None, h: Tensor | None, weight: float, eq_fraction: float
) -> Tensor:
    r"""Batch mean of :math:`w(1 - \phi)\|\max(G y - h, 0)\|_2 + w\phi\|A y - b\|_2` (DC3's soft loss)."""
    total = y.new_zeros(y.shape[0])
    if G is not None and h is not None:
        total = total + weight * (1.0 - eq_fraction) * _norm(((y @ G.to(y).T) - h).clamp_min(0))
    if A is not None and b is not None:
        total = total + weight * eq_fraction * _norm(y @ A.to(y).T - b)
    return total.mean()


def _norm(rows: Tensor) -> Tensor:
    """Row-wise Euclidean norm with gradient 0 (not NaN) at a zero row."""
    squared = rows.square().sum(-1)
    safe = torch.where(squared > 0, squared, torch.ones_like(squared))
    return torch.where(squared > 0, safe.sqrt(), torch.zeros_like(squared))


# ====================================================================== the strategy
class _LinearOutputStrategy(Strategy):
    """Shared plumbing of output-layer strategies on ``{y : A y = b, G y <= h}`` with right-hand
    sides that may depend on the input: the layer is a forward hook (it sees the forward's input),
    and it remembers the right-hand sides of the last forward for :meth:`loss`."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, Tensor | None] = {}

    @classmethod
    def unsupported_reason(cls, target: Target) -> str | None:
        if not isinstance(target, OutputTarget):
            return f"{cls.name} is an output layer; it does not constrain parameters."
        if not isinstance(target.set, Polyhedron):
            return (
                f"{cls.name} needs linear constraints on the outputs, a Polyhedron(A=..., b=..., G=..., h=...); "
                f"got {target.set!r}."
            )
        return None

    def _attach(self) -> None:
        if len(self.targets) != 1:
            raise ValueError(
                f"{self.name} takes one polyhedron on the outputs; stack the rows of A, b, G and h into "
                f"one Polyhedron instead of {len(self.targets)} targets."
            )
        polyhedron = self.targets[0].set
        assert isinstance(polyhedron, Polyhedron), "unsupported_reason admits a Polyhedron only"
        A, _, G, _ = linear_parts(polyhedron)
        some = A if A is not None else G
        assert some is not None, "a Polyhedron has A or G"
        self._n = int(some.shape[-1])
        self._prepare(A, G)
        self._handles.append(self._require_model().register_forward_hook(self._hook))

    def _hook(self, module: nn.Module, inputs: tuple, outputs: Tensor) -> Tensor:
        if not isinstance(outputs, Tensor) or outputs.dim() < 1:
            raise TypeError(f"{self.name}: the model must return a tensor of rows, got {type(outputs).__name__}.")
        rows = outputs.reshape(outputs.shape[0], -1)
        if rows.shape[-1] != self._n:
            raise ValueError(
                f"{self.name}: the model's outputs have {rows.shape[-1]} entries per row but the "
                f"polyhedron has {self._n} variables."
            )
        constraint_set = self.targets[0].set
        if constraint_set.needs_inputs:
            constraint_set = constraint_set.bind(*inputs)  # evaluates and checks the callable sides
        assert isinstance(constraint_set, Polyhedron), "unsupported_reason admits a Polyhedron only"
        A, b, G, h = linear_parts(constraint_set)
        b_t = rhs_rows(b, rows, "b") if A is not None else None
        h_t = rhs_rows(h, rows, "h") if G is not None else None
        y = self._map(rows, b_t, h_t)
        self._last = {"b": b_t, "h": h_t}
        return y.reshape(outputs.shape)

    def _prepare(self, A: Tensor | None, G: Tensor | None) -> None:
        raise NotImplementedError

    def _map(self, rows: Tensor, b: Tensor | None, h: Tensor | None) -> Tensor:
        raise NotImplementedError


@register("dc3")
class DC3(_LinearOutputStrategy):
    """DC3: complete the equalities, correct the inequalities by gradient steps, soft loss on both."""

    #: The completion is a reparameterization of the equalities (an output map that holds on every input);
    #: the correction steps and the soft loss handle the inequalities approximately.
    family = "reparameterization"
    summary = "DC3: equality completion + unrolled gradient correction + soft penalty (Donti et al. 2021)"

    def __init__(
        self,
        *,
        steps: int = 10,
        lr: float = 1e-7,
        momentum: float = 0.5,
        weight: float = 10.0,
        eq_fraction: float = 0.5,
        tol: float = 1e-4,
        completed: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int (correction steps), got {steps!r}.")
        for key, value in (("lr", lr), ("weight", weight), ("tol", tol)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}.")
        for key, value in (("momentum", momentum), ("eq_fraction", eq_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value!r}.")
        self.correction_steps, self.lr, self.momentum = steps, float(lr), float(momentum)
        self.weight, self.eq_fraction, self.tol = float(weight), float(eq_fraction), float(tol)
        self.completed = None if completed is None else tuple(completed)
        self.last_correction_steps = 0

    def _prepare(self, A: Tensor | None, G: Tensor | None) -> None:
        self._A = check_matrix(A, "A", self._n) if A is not None else None
        self._G = check_matrix(G, "G", self._n) if G is not None else None
        if self._A is None and self.completed is not None:
            raise ValueError("dc3: completed names variables solved from the equalities, but the polyhedron has no A.")
        self._completion = Completion.of(self._A, self._G, self.completed) if self._A is not None else None

    def _map(self, rows: Tensor, b: Tensor | None, h: Tensor | None) -> Tensor:
        c = self._completion
        model = self._require_model()
        tol = None if model.training else self.tol
        if c is None:  # inequalities only: correct y itself
            assert self._G is not None and h is not None
            y, self.last_correction_steps = dc3_correct(rows, self._G, h, self.correction_steps, self.lr, self.momentum, tol)
            return y
        assert b is not None
        z = c.free_part(rows)
        if c.G_eff is not None and h is not None and self.correction_steps:
            z, self.last_correction_steps = dc3_correct(
                z, c.G_eff, c.effective_h(h, b), self.correction_steps, self.lr, self.momentum, tol
            )
        return c.complete(z, b)

    def _loss_terms(self, model: nn.Module, outputs: Tensor | None, sample_ids: Tensor | None) -> Tensor | None:
        super()._loss_terms(model, outputs, sample_ids)
        if not self._last:
            raise RuntimeError("dc3: loss() was called before a forward pass of the attached model.")
        assert outputs is not None  # super() raised for None: dc3's target is on the outputs
        y = outputs.reshape(outputs.shape[0], -1)
        b, h = self._last["b"], self._last["h"]
        if (b is not None and b.dim() == 2 and b.shape[0] != y.shape[0]) or (
            h is not None and h.dim() == 2 and h.shape[0] != y.shape[0]
        ):
            raise ValueError(
                "dc3: the outputs passed to loss() are not those of the last forward pass (batch sizes "
                "differ); pass the outputs of the forward that just ran."
            )
        return dc3_soft_penalty(y, self._A, b, self._G, h, self.weight, self.eq_fraction)
