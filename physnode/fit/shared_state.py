"""The resumable state of a shared fit (:mod:`physnode.fit.shared`), kept file by file.

A shared fit steps one global parameter vector: the shared parameters, then every file's own.
Its state is spread over the members' fit files, each holding what it alone knows: its model
(the shared modules included) and start, its history, where the fit stands (phase, step), and
Adam's buffers of the shared parameters and of its own. A resumed fit, on any number of ranks,
loads each of its files' states, gathers the own buffers of every file and rebuilds the
global optimiser, so the steps that follow are those the stopped fit would have taken.

The keys of one kind's member state (``correction="auto"`` keeps one per kind tried, under
``kind/<kind>/``): ``phase``, ``phase_step``, ``epoch``, ``model/...``, ``start/...``,
``optim/shared/<i>/<buffer>``, ``optim/own/<j>/<buffer>`` and ``history/<key>``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from physnode import distributed
from physnode.errors import InvalidInputError
from physnode.fit.schedule import Cursor
from physnode.fit.state import load_module_state, module_state

#: Where one kind's member state lies in a member's ``state_``.
KIND = "kind/{}/"


def member_state(
    fitter, shared: Sequence[nn.Parameter], own: Sequence[nn.Parameter],
    adam: torch.optim.Optimizer, cursor: Cursor,
) -> dict:  # fmt: skip
    """One file's share of the state at ``cursor`` (flat keys, NumPy values)."""
    prob, history = fitter._prob, fitter._history
    state: dict = {"phase": int(cursor.phase), "phase_step": int(cursor.step),
                   "epoch": len(history["loss"])}  # fmt: skip
    state.update(module_state("model", prob.model))
    state.update(module_state("start", prob.start))
    state.update(_buffers("optim/shared", shared, adam))
    state.update(_buffers("optim/own", own, adam))
    for key, values in history.items():
        state[f"history/{key}"] = np.asarray(values).copy()
    return state


def _buffers(prefix: str, params: Sequence[nn.Parameter], adam) -> dict[str, np.ndarray]:
    out = {}
    for i, p in enumerate(params):
        for name, value in adam.state.get(p, {}).items():
            out[f"{prefix}/{i}/{name}"] = torch.as_tensor(value).detach().cpu().numpy().copy()
    return out


def _unbuffer(prefix: str, state: dict) -> dict[int, dict[str, np.ndarray]]:
    """``{i: {buffer: array}}`` from the ``<prefix>/<i>/<buffer>`` keys of ``state``."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        if key.startswith(prefix + "/"):
            i, name = key[len(prefix) + 1 :].split("/", 1)
            out.setdefault(int(i), {})[name] = np.asarray(value)
    return out


def of_kind(state: dict, kind: str) -> dict | None:
    """A member's state for ``kind`` (keys without the prefix), ``None`` when it has none."""
    prefix = KIND.format(kind)
    found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return found or None


def as_kind(state: dict, kind: str) -> dict:
    """``state`` under ``kind``'s prefix."""
    return {KIND.format(kind) + k: v for k, v in state.items()}


def load_model(fitter, state: dict) -> None:
    """A member's model (shared modules included) and start from its ``state``."""
    load_module_state("model", fitter._prob.model, state)
    load_module_state("start", fitter._prob.start, state)


def load_training(
    states: dict[int, dict], fitters: dict, shared: Sequence[nn.Parameter],
    own: dict[int, list[nn.Parameter]], adam: torch.optim.Optimizer, world,
) -> Cursor:  # fmt: skip
    """Every file's Adam buffers into the global ``adam`` (gathered from the ranks holding the
    files), each local member's history; returns the cursor the fit stopped at.

    Raises:
        InvalidInputError: the members' states are not of one stop (phases or steps differ,
            a file's state is missing).
    """
    mine = [
        (index, int(s["phase"]), int(s["phase_step"]), _unbuffer("optim/own", s),
         _unbuffer("optim/shared", s))
        for index, s in states.items()
    ]  # fmt: skip
    every = sorted((x for part in distributed.all_gather(mine, world) for x in part),
                   key=lambda x: x[0])  # fmt: skip
    cursors = {(phase, step) for _, phase, step, _, _ in every}
    missing = sorted(set(own) - {x[0] for x in every})
    if len(cursors) != 1 or missing:
        raise InvalidInputError(
            "the members of this shared fit were not stopped together (their fit files hold "
            "different states); rerun with --overwrite to fit them again"
        )
    _set_buffers(shared, every[0][4], adam)
    for index, _, _, buffers, _ in every:
        _set_buffers(own[index], buffers, adam)
    for index, fitter in fitters.items():
        fitter._history = {
            k[len("history/") :]: list(np.asarray(v))
            for k, v in states[index].items()
            if k.startswith("history/")
        }
    phase, step = cursors.pop()
    return Cursor(phase, step)


def _set_buffers(params: Sequence[nn.Parameter], buffers: dict, adam) -> None:
    for i, p in enumerate(params):
        if i in buffers:
            adam.state[p] = {
                name: torch.as_tensor(value, device=p.device if name != "step" else "cpu")
                for name, value in buffers[i].items()
            }
