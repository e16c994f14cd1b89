"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A fresh working directory (no traces/, no runs/): what a new user's shell sees."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
