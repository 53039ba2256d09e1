r"""Euclidean projections onto the simplex and the L1 ball, with their exact Jacobians.

Simplex :math:`\Delta_r = \{y : y \ge 0, \sum_i y_i = r\}`. Its projection is
:math:`P(v) = \max(v - \tau, 0)` where the threshold :math:`\tau` solves
:math:`\sum_i \max(v_i - \tau, 0) = r` (Held et al. 1974; Duchi et al. 2008).

L1 ball :math:`B_r = \{y : \|y\|_1 \le r\}`. Inside the ball :math:`P(x) = x`; outside,
:math:`P(x) = \operatorname{sign}(x) \max(|x| - \tau, 0)` with :math:`\tau` the simplex threshold
of :math:`|x|`. Both read as :math:`\operatorname{sign}(x)\max(|x| - \max(\tau, 0), 0)`.

Jacobian. On the support :math:`S = \{i : y_i \ne 0\}` with signs :math:`s = \operatorname{sign}(y)`,
:math:`J = \operatorname{diag}(1_S) - s_S s_S^\top / |S|` (identity for rows inside the ball), and
:math:`\partial y / \partial r = s_S / |S|`. It is applied in O(n) by a custom backward:
no differentiable sorting is needed.

Precision. :math:`\tau` is shift-invariant (:math:`\tau(v + c\,1) = \tau(v) + c`), so every path
computes it on the row shifted by its maximum, :math:`d = a - \max a` (exact on the support,
by Sterbenz's lemma), and forms the output as :math:`\max((d - t) - e, 0)` with the threshold
:math:`t + e` split in two: the error is a few ulps of ``r``, whatever a common offset of the
row (``x = noise + 1e8`` projects exactly), and whatever the support's size.

Forward paths (``method`` of :func:`_project`), all exact up to the rounding of :math:`\tau`:

- ``"numba"``: compiled CPU kernels (:mod:`constrain._numba_kernels`; block maxima, then Newton
  with filtering; expected O(n), threaded). What the public functions run on the CPU when numba
  is installed and ``CONSTRAIN_NO_NUMBA`` is not set to 1.
- ``"torch"``: Newton in pure torch from a lower bound on the maxima of strided groups, reusing one buffer
  (GPUs, and the CPU without numba).
- ``"sort"``: the O(n log n) sort-based reference (:func:`_sort_threshold`), for tests and
  benchmarks (``constrain bench projections``).
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import torch
from torch import Tensor
from torch.autograd import forward_ad

from constrain._checks import (
    LOW_PRECISION,
    Radius,
    check_choice,
    check_dim,
    check_finite,
    check_radius,
    check_tensor,
    is_transformed,
)

#: Newton steps of the torch path run without a host synchronisation (rows that converge earlier stay
#: put). Eagerly, a first block of ``_FIRST_STEPS`` steps on every row (``_FIRST_STEPS_SHORT`` for rows of
#: at most ``_LANES`` values, whose start is poorer) usually finishes nearly all of them; the rows left
#: then take blocks of ``_NEWTON_STEPS`` steps on their own, up to ``_NEWTON_BLOCKS`` blocks. Compiled, one
#: block of ``_NEWTON_STEPS`` (``_NEWTON_STEPS_SHORT``) steps on every row. Rows not converged then
#: (adversarial) are sorted.
_FIRST_STEPS = 2
_FIRST_STEPS_SHORT = 4
_NEWTON_STEPS = 4
_NEWTON_STEPS_SHORT = 6
_NEWTON_BLOCKS = 16
#: Strided groups, and Newton steps on their maxima, of the torch path's starting bound.
_LANES = 32
_BLOCK_STEPS = 4
#: Rows of at most this many nonzeros have their float32 output's norm summed in float32 (certified below).
_FLOAT32_NORM_TERMS = 9


def _lane_maxima(a: Tensor) -> Tensor:
    r"""The maxima of each row's ``_LANES`` strided groups :math:`\{a_j : j \equiv l \bmod L\}` (over its first
    ``n - n % L`` values), and of the rest: a reduction across rows of ``L`` values, which vectorizes (a maximum
    within short contiguous blocks does not)."""
    n = a.shape[-1]
    full = n - n % _LANES
    maxima = a[..., :full].unflatten(-1, (full // _LANES, _LANES)).amax(-2) if full else a[..., :0]
    if full < n:
        maxima = torch.cat([maxima, a[..., full:].amax(-1, keepdim=True)], -1)
    return maxima


def _lower_bound(maxima: Tensor, radius: Tensor) -> Tensor:
    r"""A lower bound of each row's threshold, usually close to it: Newton on the maxima of a partition of the row.

    ``maxima``: those of :func:`_lane_maxima` on the row shifted by its maximum (``max d = 0``),
    so the threshold lies in ``[-r, 0)``. The threshold :math:`\tau_V` of any subset :math:`V` of
    a row is at most the row's, and so is every Newton iterate for :math:`V` started left of
    :math:`\tau_V`; the group maxima are such a subset, and the largest values of a row usually
    fall in different groups, so :math:`V` often holds the whole support. The steps are those of
    :func:`_newton_steps` (float arithmetic only: boolean masks and ``where`` cost several times more
    on these short rows), a step never taken backwards.
    """
    tau = -radius.expand(*maxima.shape[:-1], 1)
    if maxima.shape[-1] > 1:
        buf = torch.empty_like(maxima)
        for _ in range(_BLOCK_STEPS):  # every iterate is a lower bound: no convergence test needed
            excess = torch.sub(maxima, tau, out=buf).clamp_min_(0).sum(-1, keepdim=True)
            count = buf.sign_().sum(-1, keepdim=True).clamp_min_(1)
            tau = tau + ((excess - radius) / count).clamp_min_(0)
    return tau


def _newton_threshold(d: Tensor, radius: Tensor, maxima: Tensor, buf: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Threshold of each row of ``d`` (shape ``(..., n)``, rows shifted so that ``max d = 0``), as ``(tau, delta)``.

    ``maxima``: :func:`_lane_maxima` of ``d`` (the start's bound, :func:`_lower_bound`).

    The threshold is :math:`\tau + \delta`, ``delta`` a correction below ``tau``'s ulp (see
    :func:`_apply_threshold`). The threshold is shift-invariant
    (:math:`\tau(v + c) = \tau(v) + c`); working on rows shifted by their maximum keeps it
    exact for rows with a large common offset, where the absolute threshold would round to the
    offset's ulp. Newton's method on the convex, decreasing, piecewise-linear
    :math:`f(\tau) = \sum_i \max(d_i - \tau, 0) - r` (Michelot 1986): started left of the root,
    the iterates :math:`\tau_{k+1} = \tau_k + (\sum_i (d_i - \tau_k)_+ - r) / |\{d_i > \tau_k\}|`
    increase monotonically and stop, exactly, once the support no longer changes; the last
    step, :math:`(\sum_S (d_i - \tau) - r)/|S|`, is computed from values of the output's size,
    so it is ``delta`` to the precision of ``r``. The start, :func:`_lower_bound`, is usually
    the threshold of a subset holding the whole support, so two steps do (one to reach the
    threshold, one to see the support repeat).

    Pure torch (any device), four elementwise passes per step into one buffer (``buf``, a
    tensor like ``d``, reused when given), no other allocation of ``d``'s size, and no host
    synchronisation inside a block of steps (a row that has converged keeps its threshold).
    Eagerly, one test after the first block (``_FIRST_STEPS`` steps on every row) finds the few
    rows left, which go on alone (:func:`_newton_rest`); compiled, after one block of
    ``_NEWTON_STEPS``, rows not converged (adversarial inputs) are sorted, the test a
    ``torch.cond``, so the whole path compiles with ``torch.compile(fullgraph=True)``.
    """
    tau = _lower_bound(maxima, radius)
    buf = torch.empty_like(d) if buf is None else buf
    short = d.shape[-1] <= _LANES
    state: tuple[Tensor, ...] = (tau, torch.full_like(tau, -1.0), torch.zeros_like(tau, dtype=torch.bool), torch.zeros_like(tau))
    if torch.compiler.is_compiling():  # (eagerly, torch.cond would compile its branches on every shape)
        state = _newton_steps(d, radius, buf, state, _NEWTON_STEPS_SHORT if short else _NEWTON_STEPS)
        return torch.cond(state[2].all(), _newton_done, _sort_unconverged, (d, radius, *state))
    state = _newton_steps(d, radius, buf, state, _FIRST_STEPS_SHORT if short else _FIRST_STEPS)
    tau, _, _, delta = state if bool(state[2].all()) else _newton_rest(d, radius, state)
    return tau, delta


def _newton_rest(d: Tensor, radius: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Eagerly, the rows of ``d`` not converged in ``state``, on their own (gathered: usually a few): blocks of
    ``_NEWTON_STEPS`` steps, one test after each, up to ``_NEWTON_BLOCKS``; rows still not converged are sorted.
    Returns the state of every row, with ``converged`` all true."""
    todo = ~state[2].squeeze(-1)
    rows = d[todo]
    rest = tuple(part[todo] for part in state)
    r = radius.expand(state[0].shape)[todo]
    buf = torch.empty_like(rows)
    for _ in range(_NEWTON_BLOCKS):
        rest = _newton_steps(rows, r, buf, rest, _NEWTON_STEPS_SHORT if d.shape[-1] <= _LANES else _NEWTON_STEPS)
        if bool(rest[2].all()):
            break
    if not bool(rest[2].all()):
        tau, delta = _sort_unconverged(rows, r, *rest)
        rest = (tau, rest[1], torch.ones_like(rest[2]), delta)
    merged = tuple(part.clone() for part in state)
    for whole, part in zip(merged, rest, strict=True):
        whole[todo] = part
    return merged


def _newton_steps(d: Tensor, radius: Tensor, buf: Tensor, state: tuple[Tensor, ...], steps: int) -> tuple[Tensor, ...]:
    """``steps`` Newton steps on every row, without a host synchronisation; ``state = (tau, count, converged, step)``."""
    tau, count, converged, step = state
    exact_float_count = d.shape[-1] * torch.finfo(d.dtype).eps <= 1  # counts up to 2^23 (float32) sum exactly
    for _ in range(steps):
        torch.sub(d, tau, out=buf).clamp_min_(0)
        excess = buf.sum(-1, keepdim=True)  # sum over the values above tau of (d - tau)
        if exact_float_count:  # buf >= 0: its signs are 1 above tau, 0 elsewhere; a float sum of them is exact
            new_count = torch.sign(buf, out=buf).sum(-1, keepdim=True)  # (count_nonzero costs ~30 passes on a CPU)
        else:
            new_count = torch.count_nonzero(buf, dim=-1).unsqueeze(-1).to(d.dtype)
        # a row whose iterate rounded up onto its largest value has no value above it: keep it
        step = torch.where(new_count > 0, (excess - radius) / new_count.clamp_min(1), 0)
        converged = converged | (new_count == count)  # the support repeats: tau is final, step is delta
        tau = torch.where(converged, tau, tau + step)
        count = new_count
    return tau, count, converged, step


def _newton_done(
    d: Tensor, radius: Tensor, tau: Tensor, count: Tensor, converged: Tensor, delta: Tensor
) -> tuple[Tensor, Tensor]:
    return tau.clone(), delta.clone()  # (torch.cond's branches may not return their inputs)


def _sort_unconverged(
    d: Tensor, radius: Tensor, tau: Tensor, count: Tensor, converged: Tensor, delta: Tensor
) -> tuple[Tensor, Tensor]:
    """``(tau, delta)``: the rows Newton has not finished (adversarial) sorted, the others kept (arguments: the state)."""
    sorted_tau, sorted_delta = _split(_sort_threshold(d, radius), d.dtype)
    return torch.where(converged, tau, sorted_tau), torch.where(converged, delta, sorted_delta)


def _sort_threshold(v: Tensor, radius: Tensor) -> Tensor:
    r"""Reference threshold by sorting (O(n log n)), *relative to each row's maximum*, in float64; for tests and benchmarks.

    With :math:`u` sorted descending and :math:`d = u - u_1`, the support size :math:`K` is the
    number of :math:`k` with :math:`k d_k > \sum_{j \le k} d_j - r` (at least 1: :math:`d_1 = 0`)
    and :math:`\tau - u_1 = (\sum_{j \le K} d_j - r) / K`. Shifting first keeps it exact for
    rows with a large common offset (unshifted, ``1e8 - r`` rounds to ``1e8`` in float32); the
    prefix sums are accumulated and kept in float64.
    """
    u, _ = torch.sort(v, dim=-1, descending=True)
    d = (u - u[..., :1]).double()
    cumsum = d.cumsum(-1) - radius.double()
    ks = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=torch.float64)
    support = (d * ks > cumsum).sum(-1, keepdim=True).clamp_min_(1)
    return cumsum.gather(-1, support - 1) / support


def _split(tau: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A float64 threshold as ``(tau, delta)`` in ``dtype``: ``tau`` rounded, ``delta`` what rounding left."""
    rounded = tau.to(dtype)
    return rounded, (tau - rounded.double()).to(dtype)


def _apply_threshold(d: Tensor, tau: Tensor, delta: Tensor) -> Tensor:
    r""":math:`\max((d - \tau) - \delta, 0)`, in place over ``d``.

    ``d - tau`` is exact where it is not small, so both roundings are relative to the output:
    rounding the threshold itself (of the size of ``r``, and shared by the whole support) would
    shift every output entry alike, and the row sum by ``|S|`` times as much.
    """
    return d.sub_(tau).sub_(delta).clamp_min_(0)


# ---------------------------------------------------------------------------------------------
# The compiled CPU kernels (numba), loaded on first use.

_NUMBA_STATE: list = []  # [module] once loaded, [None] if unavailable


def _numba_kernels():
    """The module of compiled kernels, or None: numba missing or broken, or ``CONSTRAIN_NO_NUMBA=1``."""
    if os.environ.get("CONSTRAIN_NO_NUMBA", "").strip() not in ("", "0"):
        return None
    if not _NUMBA_STATE:
        try:
            from constrain import _numba_kernels as kernels
        except ModuleNotFoundError as error:
            if error.name not in ("numba", "llvmlite"):
                raise
            kernels = None
        except ImportError as error:  # e.g. a numba built for another numpy
            warnings.warn(
                f"numba is installed but cannot be imported ({error}); the L1-ball and simplex "
                "projections fall back to pure torch on the CPU. Set CONSTRAIN_NO_NUMBA=1 to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
            kernels = None
        _NUMBA_STATE.append(kernels)
    return _NUMBA_STATE[0]


def _numba_usable(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and _numba_kernels() is not None


def _raise_non_finite() -> None:
    check_finite(torch.tensor([float("nan")]))  # the one wording for non-finite inputs


def _numba_rows(x: Tensor, radius: Tensor, ball: bool) -> tuple[Tensor, Tensor]:
    """Project the rows of ``x`` (..., n) with the compiled kernels; return ``(y, tau)``, ``tau`` float64 of shape (..., 1)."""
    kernels = _NUMBA_STATE[0]  # loaded: _numba_usable(x) holds
    rows = x.detach().reshape(-1, x.shape[-1]).contiguous()
    r = radius.detach().reshape(-1)
    r = (r if r.dtype == rows.dtype else r.to(rows.dtype)).contiguous()
    y = torch.empty_like(rows)
    taus = torch.empty(rows.shape[0], dtype=torch.float64)
    if kernels.project_rows(rows.numpy(), r.numpy(), ball, y.numpy(), taus.numpy(), torch.get_num_threads()):
        _raise_non_finite()
    return y.view(x.shape), taus.view(*x.shape[:-1], 1)


#: What every forward returns: the projection ``y``; ``outside`` (..., 1), bool: rows whose
#: Jacobian is the projection's (ball rows outside the ball; every simplex row); ``tau`` (..., 1):
#: the threshold, ``P(x) = sign(x) max(|x| - tau, 0)`` (ball; 0 for rows inside) or ``max(x - tau, 0)``.
Forward = tuple[Tensor, Tensor, Tensor]


def _forward_numba(x: Tensor, radius: Tensor, ball: bool) -> Forward:
    y, tau = _numba_rows(x, radius, ball)
    outside = tau > 0 if ball else torch.ones_like(tau, dtype=torch.bool)
    return y, outside, tau.to(x.dtype)


def _shifted(x: Tensor, ball: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""``(d, top, total, maxima)`` per row, with ``a = |x|`` (ball) or ``x``: ``d = a - max(a)`` (a new tensor),
    ``top = max(a)``, ``total = sum(a)``, ``maxima``: :func:`_lane_maxima` of ``d``.

    Raises on NaN or Inf (``total`` is finite iff every entry is). The threshold is
    shift-invariant, and ``a - top`` is exact on the support (Sterbenz), so thresholds computed
    on ``d`` lose nothing to a large common offset. ``top`` is the largest group maximum, and the
    group maxima are shifted like ``d`` (rounding is monotone: the same values as ``d``'s).
    """
    a = x.abs() if ball else x
    total = a.sum(-1, keepdim=True)
    check_finite(total)
    maxima = _lane_maxima(a)
    top = maxima.amax(-1, keepdim=True)
    d = a.sub_(top) if ball else x - top
    return d, top, total, maxima.sub_(top)


def _norm(w: Tensor, buf: Tensor | None) -> Tensor:
    r""":math:`\|w\|_1` per row of ``w >= 0`` (float32), in float64, to a relative :math:`8u` (:math:`u = 2^{-24}`) or better.

    Summing :math:`k` nonzero values (zeros add exactly) in any order errs by at most
    :math:`(k - 1)\,u` times the sum, so rows of at most ``_FLOAT32_NORM_TERMS`` nonzeros (their
    count: the float sum of ``sign(w)``, exact, in the scratch ``buf``) take the float32 sum; the other
    rows (gathered: few), and every row in compiled code (which would need a synchronisation to choose), a
    float64 sum (a float64 sum of float32 values costs about ten passes over them on a CPU).
    """
    if buf is None or torch.compiler.is_compiling():
        return w.sum(-1, keepdim=True, dtype=torch.float64)
    many = torch.sign(w, out=buf).sum(-1) > _FLOAT32_NORM_TERMS
    norm = w.sum(-1, keepdim=True).double()
    if bool(many.any()):
        norm[many] = w[many].sum(-1, keepdim=True, dtype=torch.float64)
    return norm


def _finish(
    x: Tensor,
    w: Tensor,
    radius: Tensor,
    ball: bool,
    top: Tensor,
    total: Tensor,
    tau: Tensor,
    delta: Tensor,
    buf: Tensor | None = None,
) -> Forward:
    r"""The torch and sort paths' last step, in place over ``w = max(d - tau, 0)``: float32 rows put onto the set,
    signs and rows inside (ball), and the absolute threshold.

    Rounding :math:`|x_i| - \tau` to float32 leaves :math:`\|y\|_1` off by up to about
    :math:`|S|\,\epsilon\,\tau`, i.e. relative to the input's scale, not to ``r`` (an output of
    norm 100 projected onto the unit ball lands ~1e-6 outside). Rows over ``r`` (ball) or off
    ``r`` (simplex) are rescaled by :math:`r / \|w\|_1`, a relative change of a few ulps (the numba
    kernels do the same). The norm (:func:`_norm`) is accurate to a few ulps (a float32 sum of 1000 nonzero
    entries may be off by ~1e-5); ball rows inside are ``x``, unchanged. ``buf``: a scratch like ``w``, or None.
    """
    absolute = (top.double() + tau.double() + delta.double()).to(x.dtype)
    if x.dtype != torch.float64:
        norm = _norm(w, buf)
        r = radius.to(torch.float64)
        off = norm > r if ball else norm != r
        w.mul_(torch.where(off & (norm > 0), r / norm, 1.0).to(w.dtype))
    if ball:
        outside = total > radius  # rows outside have tau > 0; rows inside stay x
        w.mul_(torch.sign(x) if buf is None else torch.sign(x, out=buf))  # w >= 0: copysign(w, x), in half the time
        if torch.compiler.is_compiling() or not bool(outside.all()):
            w = torch.where(outside, w, x, out=w)
        absolute = absolute.clamp_min_(0).masked_fill_(~outside, 0)
    else:
        outside = torch.ones_like(top, dtype=torch.bool)
    if torch.compiler.is_compiling():  # compiled, check_finite raised nothing: rows with NaN or Inf are NaN
        w = torch.where(torch.isfinite(total), w, torch.nan)
    return w, outside, absolute


def _forward_torch(x: Tensor, radius: Tensor, ball: bool) -> Forward:
    """Newton on any device, on rows shifted by their maximum: two buffers of ``x``'s size, one becomes the output."""
    d, top, total, maxima = _shifted(x, ball)
    buf = torch.empty_like(d)
    tau, delta = _newton_threshold(d, radius, maxima, buf)
    return _finish(x, _apply_threshold(d, tau, delta), radius, ball, top, total, tau, delta, buf)


def _forward_sort(x: Tensor, radius: Tensor, ball: bool) -> Forward:
    """The sort-based reference, on rows shifted by their maximum."""
    d, top, total, _ = _shifted(x, ball)
    tau, delta = _split(_sort_threshold(d, radius), d.dtype)
    return _finish(x, _apply_threshold(d, tau, delta), radius, ball, top, total, tau, delta)


def _forward_auto(x: Tensor, radius: Tensor, ball: bool) -> Forward:
    return (_forward_numba if _numba_usable(x) else _forward_torch)(x, radius, ball)


#: ``method`` of the projection: "auto" (numba on the CPU when available, else torch),
#: "numba" (the compiled kernels; CPU, float32/float64), "torch" (Newton, any device), "sort".
_FORWARDS = {"auto": _forward_auto, "numba": _forward_numba, "torch": _forward_torch, "sort": _forward_sort}


def _forward(x: Tensor, radius: Tensor, ball: bool, method: str) -> Forward:
    """The forward of ``method`` (a key of :data:`_FORWARDS`)."""
    if method == "numba" and not _numba_usable(x):
        raise RuntimeError("the numba kernels need numba, a CPU tensor of float32 or float64, and CONSTRAIN_NO_NUMBA unset.")
    return _FORWARDS[method](x, radius, ball)


def _untracked(x: Tensor, radius: Tensor) -> bool:
    """Whether nothing differentiates through the projection of ``x`` (no autograd graph, no ``torch.func``
    transform, no forward-mode dual level): then the forward runs without :class:`_SimplexOrBallProjection`,
    whose ``apply`` costs about 100 us a call (it binds the forward's signature with ``inspect``)."""
    if forward_ad._current_level >= 0:  # forward-mode AD: dual tensors do not require grad
        return False
    grad = torch.is_grad_enabled()
    return not (grad and (x.requires_grad or radius.requires_grad)) and not is_transformed(x) and not is_transformed(radius)


def _support(y: Tensor) -> tuple[Tensor, Tensor]:
    """``(s, |S|)``: ``sign(y)`` (1 on the simplex support; +-1 on the ball's; 0 elsewhere) and the
    support's size (at least 1)."""
    signs = torch.sign(y)
    return signs, signs.abs().sum(-1, keepdim=True).clamp_min(1)


class _SimplexOrBallProjection(torch.autograd.Function):
    r"""Projection of each row; outputs ``(y, outside, tau)`` (see :data:`Forward`; only ``y`` is differentiable).

    Jacobian (rows outside / simplex rows): :math:`J = \operatorname{diag}(|s|) - s s^\top / |S|`
    in ``x`` and :math:`s / |S|` in ``r``, applied in O(n) by ``backward`` (reverse mode) and
    ``jvp`` (forward mode); the identity in ``x`` and 0 in ``r`` for ball rows inside. ``vmap``
    folds a vmapped dimension into the rows, which the kernels batch over already; with it,
    ``torch.func.vmap``, ``jvp``, ``jacrev``, ``jacfwd`` and ``hessian`` all work.
    """

    @staticmethod
    def forward(x: Tensor, radius: Tensor, ball: bool, method: str) -> Forward:
        return _forward(x, radius, ball, method)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        y, outside, tau = output
        ctx.mark_non_differentiable(outside, tau)
        ctx.ball = inputs[2]
        ctx.save_for_backward(y, outside)
        ctx.save_for_forward(y, outside)

    @staticmethod
    def backward(ctx, grad: Tensor, _outside_grad=None, _tau_grad=None):
        y, outside = ctx.saved_tensors
        if torch.is_grad_enabled() or is_transformed(grad):
            # create_graph=True or torch.func: out-of-place, so that it differentiates and vmaps
            signs, size = _support(y)
            radius_grad = (signs * grad).sum(-1, keepdim=True) / size
            grad_x = grad * signs.abs() - signs * radius_grad
            if ctx.ball:
                grad_x = torch.where(outside, grad_x, grad)
                radius_grad = radius_grad * outside
            return grad_x, radius_grad, None, None
        # the same arithmetic in two buffers of y's size (the second is returned)
        signs = torch.sign(y)
        grad_x = torch.mul(signs, grad)
        radius_grad = grad_x.sum(-1, keepdim=True)
        size = torch.abs(signs, out=grad_x).sum(-1, keepdim=True).clamp_min_(1)
        radius_grad = radius_grad / size
        grad_x.mul_(grad).sub_(signs.mul_(radius_grad))  # grad * |s| - s * radius_grad
        if ctx.ball:
            grad_x = torch.where(outside, grad_x, grad, out=grad_x)
            radius_grad = radius_grad * outside
        return grad_x, radius_grad, None, None

    @staticmethod
    def jvp(ctx, x_tangent: Tensor | None, radius_tangent: Tensor | None, *_):
        r"""Forward mode: :math:`\dot y = |s| \dot x - s\,(s^\top \dot x - \dot r) / |S|` (ball rows inside: :math:`\dot x`)."""
        y, outside = ctx.saved_tensors
        signs, size = _support(y)
        along = torch.zeros_like(size) if x_tangent is None else (signs * x_tangent).sum(-1, keepdim=True)
        if radius_tangent is not None:
            along = along - radius_tangent
        tangent = -signs * (along / size)
        if x_tangent is not None:
            tangent = tangent + signs.abs() * x_tangent
        if ctx.ball:
            tangent = torch.where(outside, tangent, torch.zeros_like(tangent) if x_tangent is None else x_tangent)
        return tangent, None, None

    @staticmethod
    def vmap(info, in_dims, x: Tensor, radius: Tensor, ball: bool, method: str):
        """A vmapped dimension becomes one more leading batch dimension of the rows."""
        x_dim, radius_dim = in_dims[0], in_dims[1]
        x = x.movedim(x_dim, 0) if x_dim is not None else x.expand(info.batch_size, *x.shape)
        if radius_dim is not None:
            radius = radius.movedim(radius_dim, 0)
        else:
            radius = radius.expand(info.batch_size, *radius.shape)
        return _SimplexOrBallProjection.apply(x, radius, ball, method), (0, 0, 0)


#: The forward paths a caller may choose (``method=`` of :func:`project_simplex` / :func:`project_l1_ball`).
Method = Literal["auto", "numba", "torch", "sort"]


def numba_available() -> bool:
    """Whether the compiled kernels serve ``method="auto"`` on the CPU (numba importable, ``CONSTRAIN_NO_NUMBA`` unset)."""
    return _numba_kernels() is not None


def _project(x: Tensor, radius: Radius, dim: int, ball: bool, method: str) -> Tensor:
    check_choice("method", method, tuple(_FORWARDS))
    x = check_tensor(x)
    dim = check_dim(x, dim)
    moved = x.movedim(dim, -1)
    compute_dtype = torch.float32 if x.dtype in LOW_PRECISION else x.dtype
    # the radius in the compute dtype: a float radius is not rounded to float16 first
    r = check_radius(radius, moved.new_empty(0, dtype=compute_dtype), moved.shape[:-1])
    if moved.numel() == 0:
        if moved.shape[-1] == 0 and not ball and moved.shape[:-1].numel():
            raise ValueError("cannot project onto the simplex in 0 dimensions: it is empty for radius > 0.")
        return x.clone()
    moved = moved if moved.dtype == compute_dtype else moved.to(compute_dtype)
    y = (_forward if _untracked(moved, r) else _SimplexOrBallProjection.apply)(moved, r, ball, method)[0]
    y = y if y.dtype == x.dtype else y.to(x.dtype)
    return y if dim == x.dim() - 1 else y.movedim(-1, dim)


def project_simplex(x: Tensor, radius: Radius = 1.0, dim: int = -1, *, method: Method = "auto") -> Tensor:
    r"""Project each slice of ``x`` along ``dim`` onto :math:`\{y \ge 0, \sum y = r\}`.

    ``radius``: a positive float, or a tensor broadcastable to the other dimensions
    (one radius per row). Differentiable in ``x`` and ``radius`` with the exact Jacobian.
    float16 / bfloat16 inputs are computed in float32 and returned in their own dtype.
    ``method``: the forward path, all exact: ``"auto"`` (numba on the CPU when available, else
    torch), ``"numba"`` (compiled kernels; CPU, an error where unavailable), ``"torch"`` (Newton on
    the threshold, any device, no host synchronisation inside its iterations) or ``"sort"``
    (O(n log n), the reference).
    """
    return _project(x, radius, dim, ball=False, method=method)


def project_l1_ball(x: Tensor, radius: Radius = 1.0, dim: int = -1, *, method: Method = "auto") -> Tensor:
    r"""Project each slice of ``x`` along ``dim`` onto :math:`\{y : \|y\|_1 \le r\}`.

    Rows inside the ball are returned unchanged (Jacobian: identity). ``radius`` as in
    :func:`project_simplex`. Differentiable in ``x`` and ``radius`` with the exact Jacobian.
    ``method`` as in :func:`project_simplex`.
    """
    return _project(x, radius, dim, ball=True, method=method)


def l1_ball_threshold(x: Tensor, radius: Radius = 1.0, dim: int = -1) -> Tensor:
    r"""The soft-threshold :math:`\tau \ge 0` of each row: ``P(x) = sign(x) * relu(|x| - tau)``.

    Zero for rows inside the ball. Returned with the projected dimension kept (size 1) and
    not differentiated: use it to build the "threshold held constant" shortcut Jacobian.
    """
    x = check_tensor(x)
    dim = check_dim(x, dim)
    moved = x.movedim(dim, -1).detach()
    r = check_radius(radius, moved, moved.shape[:-1]).detach()
    if moved.numel() == 0:
        return moved.new_zeros((*moved.shape[:-1], 1)).movedim(-1, dim)
    compute_dtype = torch.float32 if x.dtype in LOW_PRECISION else x.dtype
    tau = _SimplexOrBallProjection.apply(moved.to(compute_dtype), r.to(compute_dtype), True, "auto")[2]
    return tau.to(x.dtype).movedim(-1, dim)


def _project_sort(x: Tensor, radius: Radius = 1.0, dim: int = -1, ball: bool = True) -> Tensor:
    """Sort-based projection (O(n log n)): the reference for tests and benchmarks."""
    return _project(x, radius, dim, ball=ball, method="sort")
