"""Resumable fit state as a flat dict of numpy arrays and scalars (no pickles)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from physnode.fit.problem import FitProblem


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


def optimizer_state(
    optimizer: torch.optim.Optimizer, prefix: str = "optim"
) -> dict[str, np.ndarray]:
    """Per-parameter optimiser buffers as ``<prefix>/<index>/<name>`` arrays."""
    out: dict[str, np.ndarray] = {}
    for idx, buffers in optimizer.state_dict()["state"].items():
        for name, value in buffers.items():
            out[f"{prefix}/{idx}/{name}"] = torch.as_tensor(value).detach().cpu().numpy().copy()
    return out


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, state: dict, prefix: str = "optim"
) -> None:
    sd = optimizer.state_dict()
    new_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if not key.startswith(f"{prefix}/"):
            continue
        idx, name = key[len(prefix) + 1 :].split("/", 1)
        new_state.setdefault(int(idx), {})[name] = torch.as_tensor(np.asarray(value))
    sd["state"] = new_state
    optimizer.load_state_dict(sd)


def fit_state(
    problem: FitProblem,
    adam: torch.optim.Optimizer,
    history: dict[str, list],
    phase: int,
    phase_step: int,
    shooting: Any = None,
) -> dict:
    """A resumable ``state_``: where the fit stands (``phase``, ``phase_step``, ``epoch``), the
    model, the initial state, Adam's buffers, the history so far (``history/<key>``) and, for
    multiple shooting, its segment starts and their optimiser (``shooting/...``)."""
    state: dict = {"phase": int(phase), "phase_step": int(phase_step),
                   "epoch": len(history["loss"])}  # fmt: skip
    state.update(module_state("model", problem.model))
    state.update(module_state("start", problem.start))
    state.update(optimizer_state(adam))
    for key, values in history.items():
        state[f"history/{key}"] = np.asarray(values).copy()
    if shooting is not None:
        state.update(shooting.state())
    return state


def load_fit_state(
    state: dict, problem: FitProblem, adam: torch.optim.Optimizer, history: dict[str, list]
) -> tuple[int, int]:
    """Load a :func:`fit_state` into ``problem`` (model and start), ``adam`` and ``history``
    (replaced key by key, in place); returns ``(phase, phase_step)``."""
    load_module_state("model", problem.model, state)
    load_module_state("start", problem.start, state)
    load_optimizer_state(adam, state)
    for key, value in state.items():
        if key.startswith("history/"):
            history[key[len("history/") :]] = list(np.asarray(value))
    return int(state["phase"]), int(state["phase_step"])
