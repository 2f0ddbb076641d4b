"""Shared pytest set-up: thread count and the one GPU marker.

A test marked ``@pytest.mark.gpu`` needs CUDA; it is skipped cleanly where no GPU is present.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
