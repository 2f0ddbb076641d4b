"""The law a fitted hybrid model's correction learned (:mod:`physnode.models.discovery`),
read from the correction along the fitted trajectory."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from physnode.fit.penalty import correction_parts
from physnode.fit.problem import FitProblem
from physnode.models.discovery import Discovery, discover_particles, discover_state
from physnode.models.registry import CORRECTIONS

__all__ = ["discovered_law"]


def discovered_law(prob: FitProblem, states: np.ndarray) -> Discovery | None:
    """The sparse law of the correction at ``states`` ``(T, D)`` (the fitted trajectory over
    the training window, where the data taught the network); ``None`` for models without a
    network (a physics model, named terms or not)."""
    model, system = prob.model, prob.system
    if system is None or prob.correction is None or getattr(model, "correction", None) is None:
        return None
    correction, physics = _correction(prob, states)
    # the square root of physnode.fit.penalty.correction_size, the quantity a penalty weighs
    size = float(np.sqrt(np.mean(correction**2)) / max(np.sqrt(np.mean(physics**2)), 1e-300))
    return dataclasses.replace(_law(prob, states, correction), relative_size=size)


def _law(prob: FitProblem, states: np.ndarray, correction: np.ndarray) -> Discovery:
    system = prob.system
    if prob.particles is not None:
        n, d = prob.particles
        q = states[:, : n * d].reshape(len(states), n, d)
        v = states[:, n * d : 2 * n * d].reshape(len(states), n, d)
        masses = system.param("masses").detach().cpu().numpy()
        families = CORRECTIONS[prob.correction].families
        return discover_particles(q, v, masses, correction.reshape(len(states), n, d), families)
    names = list(system.state_names)
    targets = names[len(names) // 2 :] if system.second_order else names
    return discover_state(states, names, correction, targets)


def _correction(prob: FitProblem, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The correction's and the physics' parts of the derivative at ``states``
    (:func:`~physnode.fit.penalty.correction_parts`), as float64 arrays."""
    start = prob.start()
    y = torch.as_tensor(states, dtype=start.dtype, device=start.device)
    with torch.no_grad():
        extra, physics = correction_parts(prob, y)
    return extra.cpu().numpy().astype(np.float64), physics.cpu().numpy().astype(np.float64)
