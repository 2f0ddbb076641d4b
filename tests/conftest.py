"""Shared pytest fixtures and the GPU skip."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
