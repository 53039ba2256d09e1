r"""PSiLON Net (Biswas 2024, arXiv 2404.19112), its baselines, path norms, Lipschitz checks and pruning.

Every model here is a :class:`Net`: linear layers ``layers.0 .. layers.L`` with ReLU between them,

.. math:: f(x) = W_L\,\sigma(\cdots \sigma(W_1 x + b_1) \cdots) + b_L,

or, with ``residual=True``, the simplified residual blocks of the paper built on the concatenated
ReLU :math:`\mathrm{CReLU}(z) = [\max(z, 0);\ \min(z, 0)]` (note :math:`z = \max(z,0) + \min(z,0)`):

.. math:: z_1 = W_1 x + b_1,\quad z_{l+1} = z_l + [W^+_l\ W^-_l]\,\mathrm{CReLU}(z_l) + b_l,\quad
          f(x) = [W^+_L\ W^-_L]\,\mathrm{CReLU}(z_L) + b_L.

PSiLON Net puts L1 weight normalization on every layer, row by row (one row = one output unit):
:math:`w_j = g\, v_j / \|v_j\|_1`, so :math:`\|w_j\|_1 = |g|`, with one length :math:`g` shared by
the whole layer for the hidden layers and one length per output on the last layer. A layer that
reads a CReLU (a residual block, the residual head) has two halves :math:`[W^+_j\ W^-_j]` normalized
together by the row norm of :math:`\tilde w_j = \max(|w^+_j|, |w^-_j|)` (entrywise), as the authors
do: :math:`w^\pm_j = g\, v^\pm_j / \|\tilde v_j\|_1`, so :math:`\|\tilde w_j\|_1 = |g|`. The
normalization is :class:`PSiLONWeightNorm`, the toolkit's ``strategies.L1WeightNorm`` (free
length) extended to the two halves, to the L2 norm (the "standard" net and the L2 ablations) and to
the gradual projection towards sparsity (below). Initialization as in the official code:
orthogonal :math:`V` (both halves equal, :math:`V^- = V^+`), :math:`g = 1`, bias 0; residual
blocks start with :math:`g = 0`, hence as the identity.

Gradual projection towards sparsity (``sparsify`` = :math:`\alpha \in [0, 1]`): the weight becomes
:math:`(1 - \alpha) W + \alpha\, g\, \mathrm{sign}(v) \max(|v| - \tau, 0)` with :math:`\tau` the
threshold that projects :math:`\tilde v_j` onto the unit simplex (the same :math:`\tau` for both
halves). The two terms have the same signs and rows of L1 norm :math:`|g|` (in :math:`\tilde w`), so
the blend keeps :math:`\|\tilde w_j\|_1 = |g|` and the product form of the path norm stays exact;
at :math:`\alpha = 1` the weights have exact zeros.

1-path-norm. For weights :math:`W_1, \dots, W_L` of a ReLU network,
:math:`\mathrm{P}_1 = \mathbf 1^\top |W_L| \cdots |W_1| \mathbf 1` (the sum over input-output paths
of the product of the absolute weights). Because :math:`|J(x)| \le |W_L| \cdots |W_1|` entrywise
for the Jacobian :math:`J(x) = W_L D_{L-1} \cdots D_1 W_1` (:math:`D` diagonal with entries in
:math:`\{0, 1\}`), it bounds the Lipschitz constant from :math:`(\mathbb R^d, \|\cdot\|_\infty)` to
:math:`(\mathbb R^k, \|\cdot\|_1)`:

.. math:: \|f(x) - f(y)\|_1 \le \sup_z \|J(z)\|_{\infty\to 1}\, \|x - y\|_\infty,\qquad
          \|J\|_{\infty\to 1} = \max_{\|u\|_\infty \le 1} \|J u\|_1 = \max_{s \in \{\pm 1\}^k} \|J^\top s\|_1
          \le \textstyle\sum_{ij} |J_{ij}| \le \mathrm{P}_1.

(It therefore bounds every :math:`p \to q` Lipschitz constant as well, since
:math:`\|u\|_\infty \le \|u\|_p` and :math:`\|y\|_q \le \|y\|_1`; for one output it is the
:math:`\ell_\infty` Lipschitz constant, whose dual gradient norm is :math:`\|\nabla f\|_1`.)

With shared lengths the rows of :math:`|W_l|` sum to :math:`|g_l|`, so ones propagate as scalars and
:math:`\mathrm{P}_1 = \prod_{l<L} |g_l| \cdot \sum_i |g_{L,i}|` exactly (the *product form*). In a
residual block the Jacobian's entries are :math:`\delta_{ij} + W^\pm_{ij}`, one of the two per input
:math:`j` (the sign of :math:`z_j` decides), so only the paths through
:math:`I + \tilde W_l` are needed (the paper's *improved* bound):
:math:`\mathbf 1^\top \tilde W_L \prod_l (I + \tilde W_l) |W_1| \mathbf 1 =
|g_1| \prod_l (1 + |g_l|) \sum_i |g_{L,i}|`, equal to the explicit value because :math:`\tilde W`
itself is normalized. The original (not improved) path norm counts both CReLU halves,
:math:`|I + W^+| + |I + W^-|` per block and :math:`|W^+_L| + |W^-_L|` at the head; its rows sum to
at most :math:`2 + 2|g_l|` (and :math:`2|g_{L,i}|`), whence the product bound
:math:`|g_1| \prod (2 + 2|g_l|) \cdot 2\sum_i |g_{L,i}|`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from constrain import project_simplex
from strategies import L1WeightNorm

#: The model kinds: the tabular study's (``mlp`` .. ``psilon-res``) and the deep residual ablation's.
Kind = Literal["mlp", "standard", "l1-mlp", "psilon", "psilon-res", "standard-res", "l1-ib", "l1-ob", "l2-ib", "l2-ob"]


@dataclass(frozen=True)
class Spec:
    """How a kind is built and regularized.

    ``norm``: None (plain ``nn.Linear``) or the normalization's p (1 or 2); ``shared``: one length
    per hidden layer (PSiLON) or one per unit; ``reg``: ``"path"`` (the product form, PSiLON),
    ``"path-explicit"`` (the explicit improved path norm), ``"path-original"`` (the explicit path
    norm counting both CReLU halves), ``"l2"`` (sum of squared weights), ``"l1"`` (the L1 penalty,
    applied by the training loop's proximal step) or None.
    """

    residual: bool
    norm: int | None
    shared: bool
    reg: str | None


SPECS: dict[str, Spec] = {
    "mlp": Spec(False, None, False, None),
    "standard": Spec(False, 2, False, "l2"),
    "l1-mlp": Spec(False, None, False, "l1"),
    "psilon": Spec(False, 1, True, "path"),
    "psilon-res": Spec(True, 1, True, "path"),
    # the deep ablation of the paper (residual nets): L1 or L2 normalization, lengths per unit,
    # improved (IB) or original (OB) explicit path norm; "standard-res" is the L2 baseline
    "standard-res": Spec(True, 2, False, "l2"),
    "l1-ib": Spec(True, 1, False, "path-explicit"),
    "l1-ob": Spec(True, 1, False, "path-original"),
    "l2-ib": Spec(True, 2, False, "path-explicit"),
    "l2-ob": Spec(True, 2, False, "path-original"),
}
KINDS: tuple[str, ...] = tuple(SPECS)


def crelu(z: Tensor) -> Tensor:
    r"""Concatenated ReLU :math:`[\max(z, 0);\ \min(z, 0)] = [\mathrm{relu}(z); -\mathrm{relu}(-z)]`."""
    return torch.cat([F.relu(z), -F.relu(-z)], dim=-1)


class Net(nn.Module):
    """A ReLU MLP (``residual=False``) or a CReLU residual network (``residual=True``).

    ``layers[0]``: ``in_features -> hidden``; then ``hidden_layers`` layers ``hidden -> hidden``
    (plain) or residual blocks ``2 hidden -> hidden``; last: ``hidden (2 hidden) -> out_features``.
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, hidden_layers: int = 1, residual: bool = False) -> None:
        super().__init__()
        if hidden_layers < 0 or hidden < 1:
            raise ValueError(f"need hidden >= 1 and hidden_layers >= 0, got {hidden}, {hidden_layers}.")
        self.residual = residual
        self.in_features, self.hidden, self.out_features = in_features, hidden, out_features
        width = 2 * hidden if residual else hidden
        layers = [nn.Linear(in_features, hidden)]
        layers += [nn.Linear(width, hidden) for _ in range(hidden_layers)]
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        z = self.layers[0](x)
        if self.residual:
            for block in self.layers[1:-1]:
                z = z + block(crelu(z))
            return self.layers[-1](crelu(z))
        for layer in self.layers[1:]:
            z = layer(F.relu(z))
        return z

    def linears(self) -> list[nn.Linear]:
        """The layers, typed (each is an ``nn.Linear``)."""
        out = [layer for layer in self.layers if isinstance(layer, nn.Linear)]
        assert len(out) == len(self.layers)  # __init__ builds linear layers only
        return out

    def weights(self) -> list[Tensor]:
        """The effective weight of every layer (a parametrized weight gives its computed value)."""
        return [layer.weight for layer in self.linears()]


# --------------------------------------------------------------------------- weight normalization


class PSiLONWeightNorm(L1WeightNorm):
    r"""PSiLON's weight normalization of one layer, row by row (free length, ``radius=None``).

    ``halves=1``: :math:`w_j = g\, v_j / \|v_j\|_p` (with ``p=1`` exactly ``L1WeightNorm``).
    ``halves=2`` (a layer reading a CReLU, weight ``[V^+ V^-]``): both halves are divided by
    :math:`\|\tilde v_j\|_p`, :math:`\tilde v_j = \max(|v^+_j|, |v^-_j|)`, so :math:`\|\tilde w_j\|_p = |g|`.
    ``sparsify`` (:math:`\alpha`, a plain attribute the training loop sets): blend with
    :math:`g\,\mathrm{sign}(v)\max(|v| - \tau, 0)`, :math:`\tau` the unit-simplex threshold of
    :math:`\tilde v_j` (shared by the halves); 0 skips the projection.
    """

    def __init__(self, weight: Tensor, *, halves: int = 1, p: int = 1, shared_length: bool = False, eps: float = 1e-6) -> None:
        if halves not in (1, 2) or p not in (1, 2):
            raise ValueError(f"halves and p must be 1 or 2, got halves={halves}, p={p}.")
        if weight.dim() != 2 or weight.shape[1] % halves:
            raise ValueError(
                f"weight must be 2-d with a column count divisible by halves={halves}, got shape {tuple(weight.shape)}."
            )
        super().__init__(weight, radius=None, shared_length=shared_length, eps=eps)
        self.halves, self.p = halves, p
        self.sparsify = 0.0

    def tilde(self, v: Tensor) -> Tensor:
        r""":math:`\tilde v = \max(|v^+|, |v^-|)` (``halves=2``) or :math:`|v|`, shape ``(rows, cols / halves)``."""
        if self.halves == 1:
            return v.abs()
        h = v.shape[1] // 2
        return torch.maximum(v[:, :h].abs(), v[:, h:].abs())

    def _tile(self, t: Tensor) -> Tensor:
        return t if self.halves == 1 else torch.cat([t, t], dim=1)

    def row_norm(self, v: Tensor) -> Tensor:
        r""":math:`\|\tilde v_j\|_p`, shape ``(rows, 1)``, guarded below by ``eps``."""
        t = self.tilde(v)
        norm = t.sum(1, keepdim=True) if self.p == 1 else t.square().sum(1, keepdim=True).sqrt()
        return norm.clamp_min(self.eps)

    def direction(self, v: Tensor) -> Tensor:
        """The weight for unit length (:math:`g = 1`): what the layer computes, up to its length."""
        d = v / self.row_norm(v)
        alpha = float(self.sparsify)
        if alpha <= 0.0:
            return d
        if alpha > 1.0:
            raise ValueError(f"sparsify must be in [0, 1], got {alpha}.")
        t = self.tilde(v)
        # relu(|v| - tau) = relu(|v| - t + P(t)): exact on and off the support, differentiable
        kept = F.relu(v.abs() - self._tile(t - project_simplex(t, 1.0, dim=1)))
        return (1.0 - alpha) * d + alpha * torch.sign(v) * kept

    def forward(self, v: Tensor) -> Tensor:
        return self.length * self.direction(v)

    @torch.no_grad()
    def right_inverse(self, w: Tensor) -> Tensor:
        norms = self.row_norm(w)
        self.raw_length.copy_(norms.mean(0, keepdim=True) if self.shared_length else norms)
        return w


def _normalize(layer: nn.Linear, *, halves: int, p: int, shared: bool, length: float) -> None:
    """Register :class:`PSiLONWeightNorm` on ``layer.weight`` and set the length(s) to ``length``."""
    norm = PSiLONWeightNorm(layer.weight, halves=halves, p=p, shared_length=shared)
    parametrize.register_parametrization(layer, "weight", norm)
    with torch.no_grad():
        norm.raw_length.fill_(length)  # with radius=None the raw length is g itself


def weight_norm_module(layer: nn.Module) -> PSiLONWeightNorm | None:
    """The :class:`PSiLONWeightNorm` of ``layer.weight``, or None."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    return next((m for m in layer.get_submodule("parametrizations.weight").children() if isinstance(m, PSiLONWeightNorm)), None)


def layer_length(layer: nn.Module) -> Tensor:
    r"""The length :math:`g` of a weight-normalized layer, shape ``(1, 1)`` if shared, else
    ``(rows, 1)``; raises ``TypeError`` if ``layer.weight`` is not weight-normalized."""
    norm = weight_norm_module(layer)
    if norm is None:
        raise TypeError(f"{type(layer).__name__}.weight is not parametrized with PSiLONWeightNorm.")
    return norm.length


def set_sparsify(net: nn.Module, alpha: float) -> None:
    r"""Set the blend :math:`\alpha` towards the sparse projection on every L1-normalized layer."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    for module in net.modules():
        if isinstance(module, PSiLONWeightNorm) and module.p == 1:
            module.sparsify = float(alpha)


# --------------------------------------------------------------------------- models


def build(kind: Kind, in_features: int, out_features: int, hidden: int = 64, hidden_layers: int = 1) -> Net:
    """A fresh model of ``kind`` (seed torch before calling for reproducibility); see :data:`SPECS`.

    ``mlp``, ``l1-mlp``: plain ``nn.Linear`` layers with torch's default initialization (the L1
    penalty is the training loop's business). Normalized kinds, as the official code builds them:
    orthogonal :math:`V` (CReLU layers: :math:`V^- = V^+`), bias 0, length 1, residual blocks
    length 0 (identity blocks).
    """
    if kind not in SPECS:
        raise KeyError(f"unknown model kind {kind!r}; kinds: {', '.join(KINDS)}.")
    spec = SPECS[kind]
    net = Net(in_features, hidden, out_features, hidden_layers, residual=spec.residual)
    if spec.norm is None:
        return net
    last = len(net.layers) - 1
    for i, layer in enumerate(net.linears()):
        halves = 2 if spec.residual and i > 0 else 1
        with torch.no_grad():
            v = layer.weight[:, : layer.weight.shape[1] // halves]
            nn.init.orthogonal_(v)
            if halves == 2:
                layer.weight[:, v.shape[1] :] = v  # V- = V+
            nn.init.zeros_(layer.bias)
        block = spec.residual and 0 < i < last
        _normalize(layer, halves=halves, p=spec.norm, shared=spec.shared and i < last, length=0.0 if block else 1.0)
    return net


def standard_penalty(net: Net) -> Tensor:
    r""":math:`\sum_l \|W_l\|_F^2` (both CReLU halves), i.e. :math:`\sum_{l,j} g_{lj}^2` for a one-half
    L2-normalized layer: the "standard" net's regularizer."""
    return sum((w.square().sum() for w in net.weights()), net.linears()[0].bias.new_zeros(()))


def regularizer(net: Net, kind: str) -> Tensor | None:
    """The penalty :math:`R` of ``kind`` (the loss adds :math:`\\lambda R`), or None (no penalty, or
    the L1 penalty that the training loop applies by a proximal step)."""
    reg = SPECS[kind].reg
    if reg == "path":
        return path_norm_bound(net)
    if reg == "path-explicit":
        return path_norm_explicit(net)
    if reg == "path-original":
        return path_norm_explicit(net, improved=False)
    if reg == "l2":
        return standard_penalty(net)
    return None


# --------------------------------------------------------------------------- path norms


def path_norm_bound(net: Net, improved: bool = True) -> Tensor:
    r"""The 1-path-norm of a PSiLON net in product-of-lengths form (differentiable; the regularizer).

    Plain: :math:`\prod_{l<L} |g_l| \sum_i |g_{L,i}|` (equal to the explicit 1-path-norm).
    Residual, improved: :math:`|g_1| \prod_{\text{blocks}} (1 + |g_l|) \sum_i |g_{L,i}|` (equal to the
    explicit value); original: :math:`|g_1| \prod (2 + 2|g_l|) \cdot 2 \sum_i |g_{L,i}|` (an upper bound).
    Needs every layer L1-normalized with shared hidden lengths.
    """
    norms = [weight_norm_module(layer) for layer in net.layers]
    if any(n is None or n.p != 1 for n in norms) or not all(n.shared_length for n in norms[:-1]):  # type: ignore[union-attr]  # all() runs only when no n is None
        raise TypeError(
            "path_norm_bound needs a PSiLON net (every layer L1-normalized, shared hidden lengths); use path_norm_explicit."
        )
    lengths = [layer_length(layer).abs() for layer in net.layers]
    value = lengths[0].sum()
    for g in lengths[1:-1]:
        value = value * ((1.0 + g.sum() if improved else 2.0 + 2.0 * g.sum()) if net.residual else g.sum())
    head = lengths[-1].sum()
    return value * (2.0 * head if net.residual and not improved else head)


def _split(w: Tensor, hidden: int) -> tuple[Tensor, Tensor]:
    return w[:, :hidden], w[:, hidden:]


def path_norm_explicit(net: Net, improved: bool = True) -> Tensor:
    r"""The 1-path-norm computed from the weights: ones propagated through the absolute weights,
    :math:`\mathbf 1^\top |W_L| \cdots |W_1| \mathbf 1`; residual blocks use :math:`I + \tilde W`
    (``improved``) or :math:`|I + W^+| + |I + W^-|`. Works for every :class:`Net`."""
    weights = net.weights()
    r = weights[0].abs().sum(1)  # |W_1| 1
    if not net.residual:
        for w in weights[1:]:
            r = w.abs() @ r
        return r.sum()
    h = net.hidden
    eye = torch.eye(h, dtype=r.dtype, device=r.device)
    for w in weights[1:-1]:
        wp, wn = _split(w, h)
        if improved:
            r = r + torch.maximum(wp.abs(), wn.abs()) @ r
        else:
            r = ((eye + wp).abs() + (eye + wn).abs()) @ r
    hp, hn = _split(weights[-1], h)
    head = torch.maximum(hp.abs(), hn.abs()) if improved else hp.abs() + hn.abs()
    return (head @ r).sum()


def lipschitz_bound(net: Net) -> float:
    r"""The tightest 1-path-norm bound we have on :math:`\mathrm{Lip}_{\infty\to 1}(f)`: the improved
    explicit value (for a PSiLON net equal to :func:`path_norm_bound`, up to rounding)."""
    with torch.no_grad():
        return float(path_norm_explicit(net, improved=True))


# --------------------------------------------------------------------------- sampled Lipschitz estimates


def input_jacobians(net: nn.Module, x: Tensor) -> Tensor:
    r"""Jacobians :math:`J(x_n) = \partial f(x_n) / \partial x_n`, shape ``(n, k, d)`` (one backward per output)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = net(x)
        rows = [torch.autograd.grad(out[:, i].sum(), x, retain_graph=i + 1 < out.shape[1])[0] for i in range(out.shape[1])]
    return torch.stack(rows, dim=1)


def norm_inf_to_1(J: Tensor, max_exact: int = 14, chunk: int = 256) -> Tensor:
    r""":math:`\|J\|_{\infty\to 1} = \max_{s \in \{\pm1\}^k} \|J^\top s\|_1` for each ``J`` of ``(n, k, d)``.

    Exact by enumeration of the :math:`2^{k-1}` sign vectors (``s`` and ``-s`` give the same value)
    when :math:`k \le` ``max_exact``; otherwise a lower bound from 4096 random sign vectors.
    """
    k = J.shape[1]
    if k <= max_exact:
        bits = (torch.arange(2 ** (k - 1))[:, None] >> torch.arange(k - 1)[None, :]) & 1
        signs = torch.cat([torch.zeros(len(bits), 1, dtype=torch.long), bits], dim=1).to(J.dtype).mul(-2).add(1)
    else:
        gen = torch.Generator().manual_seed(0)
        signs = torch.randint(0, 2, (4096, k), generator=gen).to(J.dtype) * 2 - 1
    signs = signs.to(J.device)
    return torch.cat([(signs @ part).abs().sum(-1).amax(-1) for part in J.split(chunk)])


def sample_points(X: Tensor, n: int, seed: int = 0) -> Tensor:
    """Points to probe the Jacobian at: the data, Gaussian perturbations of it (scale 0.5 and 2),
    and uniform points in the data's bounding box widened by 1 on every side; about ``n`` in all."""
    gen = torch.Generator().manual_seed(seed)
    X = X.detach()
    parts = [X[torch.randperm(len(X), generator=gen)[: n // 4]]]
    for scale in (0.5, 2.0):
        idx = torch.randint(0, len(X), (n // 4,), generator=gen)
        parts.append(X[idx] + scale * torch.randn(n // 4, X.shape[1], generator=gen, dtype=X.dtype))
    lo, hi = X.min(0).values - 1, X.max(0).values + 1
    rest = n - sum(len(p) for p in parts)
    parts.append(lo + (hi - lo) * torch.rand(rest, X.shape[1], generator=gen, dtype=X.dtype))
    return torch.cat(parts)


def sampled_lipschitz(net: nn.Module, X: Tensor, n: int = 2048, seed: int = 0) -> float:
    r"""Empirical lower bound of :math:`\mathrm{Lip}_{\infty\to1}(f)`: the largest
    :math:`\|J(x)\|_{\infty\to 1}` over :func:`sample_points` (a ReLU net is piecewise linear, so its
    Lipschitz constant is the supremum of the local Jacobian norms)."""
    points = sample_points(X, n, seed)
    best = 0.0
    for part in points.split(512):
        best = max(best, float(norm_inf_to_1(input_jacobians(net, part)).max()))
    return best


# --------------------------------------------------------------------------- pruning and FLOPs


def materialize(net: Net) -> Net:
    """A new plain :class:`Net` (no parametrizations) with ``net``'s current effective weights.

    Built afresh rather than by ``copy.deepcopy`` + ``remove_parametrizations``: a deep copy shares
    the dynamically created ``Parametrized*`` class with the original, and removing the
    parametrization from the copy deletes the ``weight`` property from that shared class, which
    breaks the original (torch 2.x).
    """
    plain = Net(net.in_features, net.hidden, net.out_features, len(net.layers) - 2, net.residual)
    plain.to(next(net.parameters()))
    with torch.no_grad():
        for target, layer in zip(plain.linears(), net.linears(), strict=True):
            target.weight.copy_(layer.weight)
            target.bias.copy_(layer.bias)
    return plain


def near_zero_mask(w: Tensor, tol: float) -> Tensor:
    r"""Entries with :math:`|w_{ij}| \le \mathrm{tol} \cdot \|w_i\|_1` (small relative to their row's L1 norm)."""
    return w.abs() <= tol * w.abs().sum(1, keepdim=True)


def near_zero_fraction(net: Net, tol: float) -> float:
    """Fraction of all weights (biases excluded) that are near zero in the sense of :func:`near_zero_mask`."""
    with torch.no_grad():
        ws = net.weights()
        return sum(int(near_zero_mask(w, tol).sum()) for w in ws) / sum(w.numel() for w in ws)


def _original(layer: nn.Module) -> Tensor:
    """The unconstrained tensor behind the parametrized ``layer.weight``."""
    original = layer.get_submodule("parametrizations.weight").original
    assert isinstance(original, Tensor)  # torch.nn.utils.parametrize keeps it as a parameter
    return original


def _half_rows(net: Net) -> list[Tensor]:
    """Every layer's effective weight as rows of one input block: a layer reading a CReLU gives
    its ``W+`` rows and its ``W-`` rows separately (the official count); a normalized layer its
    direction :math:`W / g`."""
    out: list[Tensor] = []
    with torch.no_grad():
        for i, layer in enumerate(net.linears()):
            norm = weight_norm_module(layer)  # normalized: its direction (defined even at g = 0)
            w = layer.weight if norm is None else norm.direction(_original(layer))
            w = w.detach()
            out.extend(w.chunk(2, dim=1) if net.residual and i > 0 else [w])
    return out


def near_sparsity(net: Net) -> float:
    r"""The paper's entropy-based near sparsity: for each unit's weight row :math:`w` of length
    :math:`d` (each CReLU half separately), :math:`p = |w| / \|w\|_1`,
    :math:`H = -\sum_i p_i \log p_i` and :math:`1 - e^{H} / d` (:math:`e^H` is the effective number
    of non-zero entries: 0 for a uniform row, :math:`1 - 1/d` for a single non-zero, 1 for a zero
    row); the mean over all rows of all layers. Scale-free: measured on each normalized layer's
    direction (the official code reads :math:`V`, the same thing unless ``sparsify`` > 0)."""
    values = []
    for w in _half_rows(net):
        total = w.abs().sum(1, keepdim=True)
        prob = w.abs() / total.clamp_min(torch.finfo(w.dtype).tiny)
        entropy = -torch.special.xlogy(prob, prob).sum(1)
        ns = 1.0 - entropy.exp() / w.shape[1]
        values.append(torch.where(total[:, 0] > 0, ns, torch.ones_like(ns)))
    return float(torch.cat(values).mean())


def exact_zero_fraction(net: Net) -> float:
    """Fraction of all weights (biases excluded) that are exactly 0."""
    with torch.no_grad():
        ws = net.weights()
        return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def prune(net: Net, tol: float) -> Net:
    """A materialized copy whose near-zero weights (:func:`near_zero_mask`) are set to exactly 0."""
    plain = materialize(net)
    with torch.no_grad():
        for layer in plain.linears():
            layer.weight[near_zero_mask(layer.weight, tol)] = 0.0
    return plain


def live_masks(net: Net) -> list[Tensor]:
    r"""For each layer, the weights that lie on some input-to-output path of non-zero weights.

    A weight whose input unit no input reaches multiplies a constant (fold it into the next bias);
    a weight whose output unit reaches no output changes nothing. Only live weights cost compute.
    """
    with torch.no_grad():
        nz = [w != 0 for w in net.weights()]
    h, last = net.hidden, len(nz) - 1

    def unit(mask: Tensor) -> Tensor:  # CReLU inputs: both halves read the same stream unit
        return mask[:, :h] | mask[:, h:] if net.residual else mask

    def hits(mask: Tensor, active: Tensor) -> Tensor:  # rows of mask that touch an active column
        return (mask & active[None, :]).any(1)

    # forward: which inputs of each layer some network input reaches
    reach = [torch.ones(nz[0].shape[1], dtype=torch.bool)]
    z = hits(nz[0], reach[0])
    for layer in range(1, last + 1):
        reach.append(torch.cat([z, z]) if net.residual else z)
        if layer < last:
            step = hits(unit(nz[layer]), z)
            z = z | step if net.residual else step
    # backward: which outputs of each layer reach some network output
    useful = [torch.ones(nz[last].shape[0], dtype=torch.bool)]
    b = hits(unit(nz[last]).T, useful[0])
    for layer in range(last - 1, 0, -1):
        useful.insert(0, b)
        back = hits(unit(nz[layer]).T, b)
        b = b | back if net.residual else back
    useful.insert(0, b)
    return [m & u[:, None] & r[None, :] for m, u, r in zip(nz, useful, reach, strict=True)]


def flops(net: Net, sparse: bool = True) -> int:
    """Multiply-add FLOPs (2 per weight) of one forward pass for one sample: every weight if not
    ``sparse``, else the live non-zero weights (:func:`live_masks`). Biases, activations and the
    residual additions (O(width) each) are not counted."""
    if not sparse:
        return 2 * sum(w.numel() for w in net.weights())
    return 2 * sum(int(m.sum()) for m in live_masks(net))


@dataclass(frozen=True)
class PruneReport:
    """FLOPs before and after pruning at ``tol`` and the pruned model."""

    tol: float
    flops_dense: int
    flops_pruned: int
    pruned: Net

    @property
    def saved(self) -> float:
        return 1.0 - self.flops_pruned / self.flops_dense


def prune_report(net: Net, tol: float) -> PruneReport:
    pruned = prune(net, tol)
    return PruneReport(tol, flops(net, sparse=False), flops(pruned, sparse=True), pruned)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = [
    "KINDS",
    "SPECS",
    "Kind",
    "Net",
    "PSiLONWeightNorm",
    "PruneReport",
    "Spec",
    "build",
    "count_parameters",
    "crelu",
    "exact_zero_fraction",
    "flops",
    "input_jacobians",
    "layer_length",
    "lipschitz_bound",
    "live_masks",
    "materialize",
    "near_sparsity",
    "near_zero_fraction",
    "near_zero_mask",
    "norm_inf_to_1",
    "path_norm_bound",
    "path_norm_explicit",
    "prune",
    "prune_report",
    "regularizer",
    "sample_points",
    "sampled_lipschitz",
    "set_sparsify",
    "standard_penalty",
    "weight_norm_module",
]
