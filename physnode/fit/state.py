"""Resumable fit state as a flat dict of numpy arrays and scalars (no pickles)."""

from __future__ import annotations

import numpy as np
import torch


def module_state(prefix: str, module: torch.nn.Module) -> dict[str, np.ndarray]:
    """``{prefix/key: array}`` for every entry of ``module.state_dict()``."""
    return {
        f"{prefix}/{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()
    }


def load_module_state(prefix: str, module: torch.nn.Module, state: dict) -> None:
    own = module.state_dict()
    loaded = {}
    for key, value in own.items():
        full = f"{prefix}/{key}"
        if full not in state:
            raise KeyError(full)
        loaded[key] = torch.as_tensor(np.asarray(state[full]), dtype=value.dtype)
    module.load_state_dict(loaded)


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """Per-parameter optimiser buffers as ``optim/<index>/<name>`` arrays."""
    out: dict[str, np.ndarray] = {}
    for idx, buffers in optimizer.state_dict()["state"].items():
        for name, value in buffers.items():
            out[f"optim/{idx}/{name}"] = torch.as_tensor(value).detach().cpu().numpy().copy()
    return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    sd = optimizer.state_dict()
    new_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if not key.startswith("optim/"):
            continue
        _, idx, name = key.split("/", 2)
        new_state.setdefault(int(idx), {})[name] = torch.as_tensor(np.asarray(value))
    sd["state"] = new_state
    optimizer.load_state_dict(sd)
