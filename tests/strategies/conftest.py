"""Fixtures of the strategy tests."""

import pytest
import torch
from training_problem import Problem, make_problem

torch.set_num_threads(1)  # tiny problems: threads only add synchronisation


@pytest.fixture(scope="session")
def problem() -> Problem:
    return make_problem()
