"""Fits of several members: ensembles of seeds and the choice of the correction's kind.

A member is one fit of the model from a :class:`Variant`: its network seed and its kind of
correction. ``ensemble=K`` fits ``K`` members from seeds ``seed .. seed + K - 1``;
``correction="auto"`` on particle data fits them for each kind of
:data:`~physnode.models.AUTO_PARTICLE_KINDS`, ``correction_penalty="auto"`` for each weight of
:data:`~physnode.fit.penalty.CHOICES`. The reported model is the member with the lowest
validation RMSE (the training RMSE without a validation window): one model, so its
prediction, network, discovered law and symbolic refit belong together (the mean of ``K``
trajectories of a chaotic system is no trajectory of any model). The members of the reported
member's kind and weight form the ensemble: their spread, the standard deviation over members of the
predicted state at every data time, is the extrapolation uncertainty; the physical parameters'
σ combine the chosen member's σ with the members' standard deviation in quadrature (under
hidden physics the networks absorb different parts of it, and the masses move with them).

With ``retrain`` (the default), a choice among kinds or weights made on a validation window
is followed by one more fit of the chosen kind and weight on the whole training window, and
that fit is reported: the window chooses, then every sample fits (the held-out end of the
window carries much of what pins a correction down: benchmarks/RESULTS.md). An ensemble of
seeds is not retrained (its window also chooses the seed).

An interrupted fit keeps every member's resumable state under ``member/<k>/``: completed
members resume at their end (only their deterministic finish runs again), the interrupted one
where it stopped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from physnode.data import Trajectory

__all__ = ["Candidates", "Ensemble", "Variant", "fit_members"]

#: what the reported fit copies from the chosen (or the interrupted) member
RESULTS = (
    "params_", "uncertainties_", "undetermined_", "noise_", "converged_", "warnings_", "history_",
    "train_rmse_", "validation_rmse_", "extrapolation_rmse_", "prediction_", "network_state_",
    "interrupted_", "train_until_", "fit_until_", "correction_", "model_", "discovered_",
    "correction_penalty_",
    "_prob", "_objective", "_start_from_data",
)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """What makes one member: its network seed, its kind of correction (a name of
    :data:`~physnode.models.CORRECTIONS`, or ``"auto"`` where there is one to choose from) and
    the weight of its correction penalty."""

    seed: int
    correction: str
    penalty: float = 0.0


@dataclass
class Candidates:
    """The members fitted to choose the kind (``correction="auto"``) or the penalty weight
    (``correction_penalty="auto"``), one entry each.

    Attributes:
        corrections: each member's kind ``(M,)``; ``seeds`` ``(M,)``; ``penalties`` each
            member's correction penalty weight ``(M,)``.
        best: index of the chosen member.
        score: which RMSE chose it: ``"validation"`` or ``"train"`` (no validation window).
        retrained: whether the reported fit is the chosen member's kind and weight fitted once
            more on the whole training window (``Fitter.retrain``), not the member itself.
        train_rmse, validation_rmse, extrapolation_rmse: per member ``(M,)`` (NaN: none).
    """

    corrections: tuple[str, ...]
    seeds: np.ndarray
    best: int
    score: str
    train_rmse: np.ndarray
    validation_rmse: np.ndarray
    extrapolation_rmse: np.ndarray
    penalties: np.ndarray
    retrained: bool = False


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


def fit_members(
    fitter, data: Trajectory, variants: list[Variant], *, y0, progress, should_stop, resume
) -> None:
    """Fit one member per variant and set ``fitter``'s results from the chosen one (see the
    module docstring): ``fitter.ensemble_`` (an :class:`Ensemble` when several members share
    the chosen kind) and ``fitter.candidates_`` (a :class:`Candidates` when kinds were tried);
    both ``None`` when interrupted."""
    fitter.ensemble_ = fitter.candidates_ = None
    retrain = _retrains(fitter, variants)
    total = len(variants) + retrain
    fit = _MemberFits(fitter, data, y0, progress, should_stop, resume, total)
    members = []
    for variant in variants:
        members.append(fit(variant, fitter.validation_))  # the multi-fit's window
        if members[-1].interrupted_:
            _copy(members[-1], fitter)
            return
    scores, basis = _scores(members)
    best = int(np.nanargmin(scores))
    kinds = [m.correction_ or v.correction for m, v in zip(members, variants, strict=True)]
    choices = [(kind, v.penalty) for kind, v in zip(kinds, variants, strict=True)]
    chosen = members[best]
    if retrain:
        chosen = fit(Variant(variants[best].seed, kinds[best], variants[best].penalty), 0.0)
        if chosen.interrupted_:
            _copy(chosen, fitter)
            return
    if len(set(choices)) > 1:
        fitter.candidates_ = Candidates(
            tuple(kinds), np.array([v.seed for v in variants], dtype=np.int64), best, basis,
            *(np.array(col) for col in _rmses(members)),
            penalties=np.array([v.penalty for v in variants], dtype=np.float64),
            retrained=bool(retrain),
        )  # fmt: skip
    same = [m for m, c in zip(members, choices, strict=True) if c == choices[best]]
    _copy(chosen, fitter)
    if len(same) > 1:
        fitter.ensemble_ = _combine(same)
        fitter.uncertainties_ = {
            name: np.sqrt(np.asarray(fitter.uncertainties_[name]) ** 2
                          + np.std(fitter.ensemble_.params[name], axis=0, ddof=1) ** 2)
            for name in fitter.uncertainties_
        }  # fmt: skip


def _retrains(fitter, variants: list[Variant]) -> bool:
    """Whether the chosen kind and weight are fitted once more on the whole training window:
    ``fitter.retrain`` asks for it, members were chosen among several kinds or weights on a
    validation window, and each choice has one seed (an ensemble's window also chooses its
    seed, so it is kept)."""
    several = len({(v.correction, v.penalty) for v in variants}) > 1
    return bool(fitter.retrain) and several and fitter.validation_ > 0 and fitter.ensemble == 1


class _MemberFits:
    """Fits the members one after the other, each with its own resumable state under
    ``member/<k>/`` of ``fitter.state_`` and its share of one progress bar."""

    def __init__(self, fitter, data, y0, progress, should_stop, resume, total: int) -> None:
        self.fitter, self.data, self.y0 = fitter, data, y0
        self.progress, self.should_stop, self.total = progress, should_stop, total
        self.resume = resume or {}
        self.k = 0
        fitter.state_ = {}

    def __call__(self, variant: Variant, validation: float):
        member = copy.copy(self.fitter)
        member.seed, member.correction = variant.seed, variant.correction
        member.correction_penalty = variant.penalty
        member.ensemble, member.refit_symbolic = 1, False
        member.validation = validation
        prefix = f"member/{self.k}/"
        own = {key[len(prefix) :]: v for key, v in self.resume.items() if key.startswith(prefix)}
        member.fit(self.data, y0=self.y0, progress=_shifted(self.progress, self.k, self.total),
                   should_stop=self.should_stop, resume=own or None)  # fmt: skip
        self.fitter.state_.update({f"{prefix}{key}": v for key, v in member.state_.items()})
        self.k += 1
        return member


def _rmses(members: list) -> tuple[list[float], list[float], list[float]]:
    """Each member's training, validation and extrapolation RMSE (NaN: none)."""
    return (
        [m.train_rmse_ for m in members],
        [_nan(m.validation_rmse_) for m in members],
        [_nan(m.extrapolation_rmse_) for m in members],
    )


def _scores(members: list) -> tuple[np.ndarray, str]:
    """What chooses among members, the lower the better: the validation RMSE where every
    member has one, else the training RMSE; and which of the two it is."""
    train, valid, _ = _rmses(members)
    if np.all(np.isfinite(valid)):
        return np.array(valid), "validation"
    return np.array(train), "train"


def _combine(members: list) -> Ensemble:
    train, valid, extrap = (np.array(col) for col in _rmses(members))
    return Ensemble(
        seeds=np.array([m.seed for m in members], dtype=np.int64),
        best=int(np.nanargmin(_scores(members)[0])),
        validation_rmse=valid,
        train_rmse=train,
        extrapolation_rmse=extrap,
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
