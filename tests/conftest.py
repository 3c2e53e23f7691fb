"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="session")
def torch():
    """PyTorch, the oracle of the comparison tests (a test-only dependency); skip without it."""
    return pytest.importorskip("torch")
