"""Data sets that ship with installed packages (scikit-learn's ``load_*``), and synthetic data.

Nothing is downloaded: ``load_*`` read files inside the scikit-learn wheel. Features are
standardized with statistics of the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Bundled scikit-learn data sets and their task.
BUNDLED: dict[str, Literal["classification", "regression"]] = {
    "breast_cancer": "classification",
    "wine": "classification",
    "digits": "classification",
    "iris": "classification",
    "diabetes": "regression",
}


@dataclass(frozen=True)
class Dataset:
    """Features ``X`` (n, d) float, targets ``y`` (n,) (class index or real value)."""

    name: str
    task: Literal["classification", "regression"]
    X: np.ndarray
    y: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if self.task == "classification" else 1

    @property
    def num_features(self) -> int:
        return self.X.shape[1]


def load(name: str) -> Dataset:
    """Load a bundled scikit-learn data set by name (see :data:`BUNDLED`)."""
    if name not in BUNDLED:
        raise KeyError(f"unknown data set {name!r}; bundled data sets: {', '.join(BUNDLED)}.")
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64 if BUNDLED[name] == "classification" else np.float64)
    return Dataset(name, BUNDLED[name], X, y)


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale columns to zero mean and unit variance with ``train``'s statistics."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into train and test indices."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    return order[n_test:], order[:n_test]


def as_tensors(*arrays: np.ndarray, dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Convert arrays to tensors: floating arrays to ``dtype``, integer arrays to int64."""
    return [torch.as_tensor(a, dtype=dtype) if np.issubdtype(a.dtype, np.floating) else torch.as_tensor(a) for a in arrays]


def synthetic_regression(n: int, d: int, k: int = 1, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``y = tanh(X W1) W2 + noise``: a smooth nonlinear target with ``k`` outputs, float64."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W1 = rng.standard_normal((d, 16)) / np.sqrt(d)
    W2 = rng.standard_normal((16, k))
    y = np.tanh(X @ W1) @ W2 + noise * rng.standard_normal((n, k))
    return X, y


@dataclass
class Split:
    """Standardized tensors of one train / evaluation pair; ``y_mean``/``y_std`` undo target scaling."""

    X: Tensor
    y: Tensor
    X_eval: Tensor
    y_eval: Tensor
    y_mean: float = 0.0
    y_std: float = 1.0


def make_split(data: Dataset, train: np.ndarray, evaluate: np.ndarray) -> Split:
    """The rows ``train`` and ``evaluate`` of ``data``, features standardized with the training rows'
    mean and deviation (regression targets too)."""
    X, X_eval = standardize(data.X[train], data.X[evaluate])
    if data.task == "classification":
        Xt, Xe = as_tensors(X, X_eval)
        return Split(Xt, torch.as_tensor(data.y[train]), Xe, torch.as_tensor(data.y[evaluate]))
    mean, std = float(data.y[train].mean()), float(data.y[train].std()) or 1.0
    Xt, Xe, yt, ye = as_tensors(X, X_eval, (data.y[train] - mean) / std, (data.y[evaluate] - mean) / std)
    return Split(Xt, yt, Xe, ye, mean, std)


def objective(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Cross-entropy (classification) or mean squared error on standardized targets."""
    return F.cross_entropy(out, y) if task == "classification" else F.mse_loss(out.squeeze(-1), y)
