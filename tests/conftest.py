"""Shared fixtures: locations of the real datasets in ../shared/data (skipped with a reason when absent) and a
papermill runner for the notebook tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEMKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {path} (set SEMKIT_SHARED_DATA to its parent folder)")
    return path


@pytest.fixture(scope="session")
def bam_dir() -> Path:
    """BAM TiO2 SEM set: images/, instances/, measurable/ (30 images)."""
    return _shared("bam-tio2-sem")


@pytest.fixture(scope="session")
def nasa_ebc_dir() -> Path:
    """NASA EBC-1/2/3 semantic benchmark with published splits."""
    return _shared("nasa-ebc")


@pytest.fixture(scope="session")
def phenom_dir() -> Path:
    """Unlabeled Phenom desktop-SEM powder images."""
    return _shared("phenom-powder-unlabeled")


@pytest.fixture
def run_notebook(tmp_path):
    """Execute a shipped notebook with papermill in quick mode; returns the run folder."""
    from semkit.batch import execute_notebook

    def _run(name: str, **parameters) -> Path:
        run_dir = tmp_path / name
        params = {"quick": True, "figures_dir": str(tmp_path / "figures"), **parameters}
        execute_notebook(name, run_dir, params, timeout_s=600)
        return run_dir

    return _run
