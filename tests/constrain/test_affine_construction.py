"""Affine's constructor: c defaults to 0, a vector A is one row, and a per-sample c projects each row onto its own plane."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constrain import Affine


def _projection(A: np.ndarray, c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x - A^+ (A x - c), with numpy's pseudo-inverse: the Euclidean projection onto {y: A y = c}."""
    return x - (np.linalg.pinv(A) @ (A @ x.T - c.T)).T


def test_c_defaults_to_zero() -> None:
    A = np.array([[1.0, 2.0, -1.0], [0.0, 1.0, 1.0]])
    x = torch.randn(4, 3, dtype=torch.float64)
    y = Affine(A).project(x)
    np.testing.assert_allclose(y.numpy(), _projection(A, np.zeros((1, 2)), x.numpy()), atol=1e-12)


def test_a_vector_a_is_one_row() -> None:
    x = torch.randn(5, 4, dtype=torch.float64)
    y = Affine([1.0, -1.0, 2.0, 0.5], 3.0).project(x)
    np.testing.assert_allclose(
        y.numpy(), _projection(np.array([[1.0, -1.0, 2.0, 0.5]]), np.array([[3.0]]), x.numpy()), atol=1e-12
    )


def test_a_per_sample_c_projects_each_row_onto_its_plane() -> None:
    A = np.array([[1.0, 1.0, 1.0]])
    c = np.array([[0.5], [-1.0], [2.0]])  # one right-hand side per sample
    x = torch.randn(3, 3, dtype=torch.float64)
    y = Affine(A, torch.from_numpy(c)).project(x)
    np.testing.assert_allclose(y.numpy(), _projection(A, c, x.numpy()), atol=1e-12)


def test_a_per_sample_c_of_the_wrong_width_is_refused_at_construction() -> None:
    A = torch.randn(3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"c has shape \(4, 2\); expected \(3,\) or \(batch, 3\)"):
        Affine(A, torch.randn(4, 2, dtype=torch.float64))
    Affine(A, torch.randn(4, 3, dtype=torch.float64))  # one entry per row of A: accepted
