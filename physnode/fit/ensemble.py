"""Ensembles of seeds: ``K`` fits of one model from network seeds ``seed .. seed + K - 1``.

The reported model is the member with the lowest validation RMSE (the training RMSE without a
validation window): one model, so its prediction, network, discovered law and symbolic refit
belong together (the mean of ``K`` trajectories of a chaotic system is no trajectory of any
model). The members' spread, the standard deviation over members of the predicted state at
every data time, is the extrapolation uncertainty; the physical parameters' σ combine the
chosen member's σ with the members' standard deviation in quadrature (under hidden physics
the networks absorb different parts of it, and the masses move with them).

An interrupted ensemble keeps every member's resumable state under ``member/<k>/``: completed
members resume at their end (only their deterministic finish runs again), the interrupted one
where it stopped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from physnode.data import Trajectory

__all__ = ["Ensemble", "fit_ensemble"]

#: what the reported fit copies from the chosen (or the interrupted) member
RESULTS = (
    "params_", "uncertainties_", "undetermined_", "noise_", "warnings_", "history_",
    "train_rmse_", "validation_rmse_", "extrapolation_rmse_", "prediction_", "network_state_",
    "interrupted_", "train_until_", "fit_until_", "correction_", "model_", "discovered_",
    "_prob", "_objective", "_start_from_data",
)  # fmt: skip


@dataclass
class Ensemble:
    """The members of an ensemble fit.

    Attributes:
        seeds: the members' seeds ``(K,)``.
        best: index of the reported member (lowest validation RMSE, else training RMSE).
        validation_rmse, train_rmse, extrapolation_rmse: per member ``(K,)`` (NaN: none).
        params: each learned physical parameter per member, ``(K, *shape)``.
        spread: standard deviation over the members (``ddof=1``) of the predicted state at
            every data time, ``(T, D)`` (particles: positions then velocities, flattened
            ``N·D`` each; else the state), data units.
    """

    seeds: np.ndarray
    best: int
    validation_rmse: np.ndarray
    train_rmse: np.ndarray
    extrapolation_rmse: np.ndarray
    params: dict[str, np.ndarray]
    spread: np.ndarray


def _state(traj: Trajectory) -> np.ndarray:
    """``(T, D)``: positions then velocities flattened (particles), else the state."""
    if traj.positions is not None:
        t = traj.n_times
        return np.concatenate([traj.positions.reshape(t, -1), traj.velocities.reshape(t, -1)], 1)
    return np.asarray(traj.state)


def _nan(x: float | None) -> float:
    return np.nan if x is None else float(x)


def fit_ensemble(fitter, data: Trajectory, *, y0, progress, should_stop, resume) -> None:
    """Fit ``fitter.ensemble`` members and set ``fitter``'s results from them (see the module
    docstring); ``fitter.ensemble_`` is the :class:`Ensemble` (``None`` when interrupted)."""
    k_total, members, states = fitter.ensemble, [], {}
    for k in range(k_total):
        member = copy.copy(fitter)
        member.seed, member.ensemble, member.refit_symbolic = fitter.seed + k, 1, False
        member.validation = fitter.validation_  # the ensemble's window, not a single fit's
        prefix = f"member/{k}/"
        own = {key[len(prefix) :]: v for key, v in (resume or {}).items() if key.startswith(prefix)}
        member.fit(data, y0=y0, progress=_shifted(progress, k, k_total), should_stop=should_stop,
                   resume=own or None)  # fmt: skip
        members.append(member)
        states.update({f"{prefix}{key}": v for key, v in member.state_.items()})
        if member.interrupted_:
            break
    last = members[-1]
    fitter.state_ = states
    if last.interrupted_:
        _copy(last, fitter)
        fitter.ensemble_ = None
        return
    fitter.ensemble_ = _combine(fitter, members)
    best = members[fitter.ensemble_.best]
    _copy(best, fitter)
    fitter.uncertainties_ = {
        name: np.sqrt(np.asarray(best.uncertainties_[name]) ** 2
                      + np.std(fitter.ensemble_.params[name], axis=0, ddof=1) ** 2)
        for name in best.uncertainties_
    }  # fmt: skip


def _combine(fitter, members: list) -> Ensemble:
    valid = np.array([_nan(m.validation_rmse_) for m in members])
    train = np.array([m.train_rmse_ for m in members])
    score = valid if np.all(np.isfinite(valid)) else train
    return Ensemble(
        seeds=np.array([m.seed for m in members], dtype=np.int64),
        best=int(np.nanargmin(score)),
        validation_rmse=valid,
        train_rmse=train,
        extrapolation_rmse=np.array([_nan(m.extrapolation_rmse_) for m in members]),
        params={n: np.stack([m.params_[n] for m in members]) for n in members[0].params_},
        spread=np.std(np.stack([_state(m.prediction_) for m in members]), axis=0, ddof=1),
    )


def _copy(member, fitter) -> None:
    for name in RESULTS:
        setattr(fitter, name, getattr(member, name))


def _shifted(progress: Callable | None, k: int, k_total: int) -> Callable | None:
    """``progress`` counting the members' epochs one after the other on one bar."""
    if progress is None:
        return None

    def report(epoch: int, total: int, loss: float, params: dict) -> None:
        progress(k * total + epoch, k_total * total, loss, params)

    return report
