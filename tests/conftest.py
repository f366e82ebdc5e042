"""Shared test configuration: hypothesis profiles and seeded randomness.

Profiles (pick with ``HYPOTHESIS_PROFILE=<name>``):

- ``default``: few examples per property, so the whole suite runs in a few minutes on 2 cores;
- ``ci``: the same budget, derandomized so a red CI run replays identically on a laptop;
- ``thorough``: 300 examples per property, for a deliberate hunt after touching an op.

Property tests leave ``max_examples`` to the profile so that one switch scales all of them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import tinygrad_seq as ts

# Finite-difference checks run a forward per input element, so examples are slow by design.
_PATIENT = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("default", max_examples=25, **_PATIENT)
settings.register_profile("ci", max_examples=25, derandomize=True, print_blob=True, **_PATIENT)
settings.register_profile("thorough", max_examples=300, **_PATIENT)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _seeded_library_generator() -> None:
    """Every test starts from the same library random state (randn, parameter init, dropout)."""
    ts.manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed numpy generator for test data."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True, scope="session")
def one_blas_thread():
    """The suite's arrays are small: a second BLAS thread only makes them slower (and much slower
    when the machine is busy), so the whole session runs on one."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield
