"""KiTS23 with every case's mask features, loaded once per test session (a few minutes on 2 cores)."""

from __future__ import annotations

import pytest

from tests.conftest import shared_file
from twin_imaging.outcome.kits import load_kits_dataset


@pytest.fixture(scope="session")
def kits(shared_data, tmp_path_factory):
    root = shared_file(shared_data, "kits23")
    return load_kits_dataset(root, workers=2, cache_dir=tmp_path_factory.mktemp("kits_cache"))
