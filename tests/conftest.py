"""Shared fixtures: a tiny phantom dataset, an isolated cache folder, and the real ACDC root when set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from hcmbench.data.phantom import PhantomConfig, write_phantom


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Torch on one thread: the test models and images are tiny, so one thread is as fast on an idle
    machine, and far faster when other jobs share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own cache folder, and never the user's data, phantom or study storage."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HCMBENCH_CACHE", str(folder))
    monkeypatch.delenv("HCMBENCH_DATA", raising=False)
    monkeypatch.delenv("HCMBENCH_STORAGE", raising=False)
    return folder


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """Two phantom patients per group (ten in all). Read-only: copy it (`phantom_copy`) to alter it."""
    return write_phantom(tmp_path_factory.mktemp("phantom") / "acdc", PhantomConfig(patients_per_group=2, seed=0))


@pytest.fixture(scope="session")
def split_phantom(tmp_path_factory) -> Path:
    """HCM and NOR, four patients each, so that every group has a train, a val and a test patient. Read-only."""
    return write_phantom(tmp_path_factory.mktemp("split_phantom") / "acdc",
                         PhantomConfig(patients_per_group=4, groups=("HCM", "NOR")))


@pytest.fixture(scope="session")
def six_per_group(tmp_path_factory) -> Path:
    """Six phantom patients per group (thirty in all), for the tests that need several patients on every side
    of a split (the detectability test halves the held-out patients). Read-only."""
    return write_phantom(tmp_path_factory.mktemp("six_per_group") / "acdc", PhantomConfig(patients_per_group=6))


@pytest.fixture
def phantom_copy(phantom_root, tmp_path) -> Path:
    """A private copy of the tiny phantom that a test may damage."""
    return Path(shutil.copytree(phantom_root, tmp_path / "acdc"))


@pytest.fixture
def acdc_root() -> Path:
    """The real ACDC training set, when HCMBENCH_ACDC_ROOT points at it; else the test is skipped."""
    root = os.environ.get("HCMBENCH_ACDC_ROOT")
    if not root:
        pytest.skip("HCMBENCH_ACDC_ROOT is not set")
    return Path(root)


def trained_feature_space(root: Path, data, config, tmp_path_factory):
    """(feature extractor trained on `root` with `config`, in a cache folder of its own; the slices of every
    group under `data`'s other settings), for module fixtures of the feature-space tests."""
    import dataclasses

    from hcmbench.data.acdc import GROUPS
    from hcmbench.data.slices import load_slices
    from hcmbench.evaluation.features import load_feature_extractor

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HCMBENCH_CACHE", str(tmp_path_factory.mktemp("feature-cache")))
        extractor = load_feature_extractor(root, data, config)
        slices = load_slices(root, dataclasses.replace(data, groups=GROUPS))
    return extractor, slices


# What a test needs beyond this machine, as markers (`pytest -m "not postgres"`), set from the fixtures it
# uses so that no test can forget its marker; the fixtures still skip when the resource is missing.
NEEDS = {"acdc_root": "real_data", "postgres": "postgres", "mlflow_server": "postgres"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in NEEDS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
