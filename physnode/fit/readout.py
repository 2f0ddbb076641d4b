"""The law a fitted hybrid model's correction learned (:mod:`physnode.models.discovery`),
read from the correction along the fitted trajectory."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from physnode.fit.penalty import correction_parts
from physnode.fit.problem import FitProblem
from physnode.models.discovery import (
    Discovery,
    discover_particles,
    discover_state,
    monomial_values,
    polynomial_library,
)
from physnode.models.registry import CORRECTIONS

__all__ = ["DEGENERATE", "absorb", "degenerate_terms", "discovered_law"]

#: a library term whose column along the samples keeps under this fraction of its squared
#: norm off the span of the learned physical parameters' own columns (``d physics / d
#: parameter``) is one of them in disguise (Lotka–Volterra's ``prey: prey`` is ``alpha``):
#: the readout reports it (the network did learn it: the parameter's error), the symbolic
#: refit folds it into the parameters (:func:`absorb`), since no fit can tell the two apart
#: (its Jacobian is singular there and the coefficient's σ infinite)
DEGENERATE = 1e-6
#: the relative step of the central differences for those columns (their error, ~h², is far
#: under :data:`DEGENERATE`)
PARAMETER_STEP = 1e-6


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


def degenerate_terms(prob: FitProblem, states: np.ndarray) -> set[tuple[str, str]]:
    """The ``(target, monomial)`` pairs of a system without bodies whose term, along
    ``states`` ``(T, D)``, is (nearly) a combination of what the learned physical parameters
    already do (:data:`DEGENERATE`); empty for particle systems (their library has no such
    term: Newton's own pair term is left out of it)."""
    if prob.particles is not None or not prob.learned:
        return set()
    names = list(prob.system.state_names)
    targets = names[len(names) // 2 :] if prob.system.second_order else names
    basis = _orthonormal(_parameter_columns(prob, states))
    library = polynomial_library(names)
    values = monomial_values(np.asarray(states, np.float64), library)  # (T, K)
    out = set()
    for c, target in enumerate(targets):
        for k, (monomial, _) in enumerate(library):
            col = np.zeros((len(states), len(targets)))
            col[:, c] = values[:, k]
            col = col.reshape(-1)
            off = col - basis @ (basis.T @ col)
            if float(off @ off) < DEGENERATE * float(col @ col):
                out.add((target, monomial))
    return out


def absorb(
    prob: FitProblem, states: np.ndarray, terms: list[tuple[str, str, float]]
) -> dict[str, np.ndarray]:
    """The learned physical parameters (natural values) changed so that the physics does, along
    ``states``, what the degenerate ``terms`` (``(target, monomial, coefficient)``, from
    :func:`degenerate_terms`) added: the least-squares step in the parameters' columns. A
    positive parameter the step would take to or through 0 keeps its value."""
    values = {n: v.copy() for n, v in prob.physical().items()}
    if not terms:
        return values
    names = list(prob.system.state_names)
    targets = names[len(names) // 2 :] if prob.system.second_order else names
    library = dict(polynomial_library(names))
    states = np.asarray(states, np.float64)
    target = np.zeros((len(states), len(targets)))
    for name, monomial, c in terms:
        column = monomial_values(states, [(monomial, library[monomial])])[:, 0]
        target[:, targets.index(name)] += c * column
    columns, slopes = _parameter_columns(prob, states), _slopes(prob)
    step = np.linalg.lstsq(columns / slopes, target.reshape(-1), rcond=None)[0]
    k = 0
    for name in prob.learned:
        value = values[name].reshape(-1)
        new = value + step[k : k + value.size]
        if prob.system.params[name].positive:
            new = np.where(new > 0, new, value)
        values[name] = new.reshape(values[name].shape)
        k += value.size
    return values


def _slopes(prob: FitProblem) -> np.ndarray:
    """``d natural / d raw`` of each learned scalar (softplus' for positive parameters)."""
    out = []
    for name in prob.learned:
        param = prob.system.params[name]
        raw = param.raw.detach().cpu().double().reshape(-1).numpy()
        out.append(0.5 * (1 + np.tanh(raw / 2)) if param.positive else np.ones_like(raw))
    return np.concatenate(out)


def _parameter_columns(prob: FitProblem, states: np.ndarray) -> np.ndarray:
    """``(T·C, P)``: the physics' part of the corrected derivatives at ``states``,
    differentiated in each learned physical parameter's raw value by central differences."""
    start = prob.start()
    y = torch.as_tensor(states, dtype=start.dtype, device=start.device)
    cols = []
    with torch.no_grad():
        for name in prob.learned:
            flat = prob.system.params[name].raw.data.view(-1)
            for k in range(flat.numel()):
                x = float(flat[k])
                h = PARAMETER_STEP * max(1.0, abs(x))
                flat[k] = x + h
                up = correction_parts(prob, y)[1]
                flat[k] = x - h
                down = correction_parts(prob, y)[1]
                flat[k] = x
                cols.append(((up - down) / (2 * h)).reshape(-1).cpu().numpy().astype(np.float64))
    return np.stack(cols, axis=1)


def _orthonormal(columns: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the span of ``columns`` ``(R, P)`` (singular values under
    1e-12 of the largest span nothing)."""
    u, sv, _ = np.linalg.svd(columns, full_matrices=False)
    return u[:, sv > 1e-12 * sv.max()] if sv.size and sv.max() > 0 else u[:, :0]


def _correction(prob: FitProblem, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The correction's and the physics' parts of the derivative at ``states``
    (:func:`~physnode.fit.penalty.correction_parts`), as float64 arrays."""
    start = prob.start()
    y = torch.as_tensor(states, dtype=start.dtype, device=start.device)
    with torch.no_grad():
        extra, physics = correction_parts(prob, y)
    return extra.cpu().numpy().astype(np.float64), physics.cpu().numpy().astype(np.float64)
