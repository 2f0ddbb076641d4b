"""Plots of trajectories: ``plot_*(traj, ax=None) -> Axes``; never calls ``plt.show()``.

matplotlib is imported lazily, so ``import physnode`` does not need it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from physnode.data import Trajectory, atomic_write, read_trajectory
from physnode.errors import InvalidInputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from physnode.data.fitfile import FitRecord

__all__ = [
    "plot_energy_drift",
    "plot_fit",
    "plot_fit_file",
    "plot_orbits",
    "plot_phase",
    "plot_trajectory_file",
]


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.figure().add_subplot()


def _single(traj: Trajectory) -> Trajectory:
    """Member 0 of an ensemble (plots show one trajectory), else ``traj``."""
    return traj.member(0) if traj.is_ensemble else traj


def plot_orbits(traj: Trajectory, ax: Axes | None = None) -> Axes:
    """Body paths in the x–y plane (3-D runs are projected), one colour per body.

    The start is marked ``o``, the end ``x``; equal aspect ratio.
    """
    traj = _single(traj)
    if traj.positions is None:
        raise InvalidInputError(
            "plot_orbits needs a particle trajectory (positions); use plot_phase"
        )
    ax = _axes(ax)
    names = traj.body_names or tuple(str(i + 1) for i in range(traj.n_bodies or 0))
    for i, name in enumerate(names):
        x = traj.positions[:, i, 0]
        y = traj.positions[:, i, 1] if (traj.dim or 1) >= 2 else np.zeros_like(x)
        (line,) = ax.plot(x, y, lw=1.0, label=f"body {name}")
        ax.plot(x[0], y[0], "o", color=line.get_color())
        ax.plot(x[-1], y[-1], "x", color=line.get_color())
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("orbits (o start, x end)")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_energy_drift(traj: Trajectory, ax: Axes | None = None) -> Axes:
    """Relative energy error ``|E(t) - E0| / |E0|`` on a log axis against time."""
    traj = _single(traj)
    if traj.energy is None:
        raise InvalidInputError("this trajectory holds no energy to plot")
    ax = _axes(ax)
    e0 = traj.energy[0]
    drift = np.abs(traj.energy - e0) / (abs(e0) if e0 != 0 else 1.0)
    # Exact zeros (t = 0) cannot be shown on a log axis; floor them at the float64 epsilon.
    ax.semilogy(traj.times, np.maximum(drift, np.finfo(np.float64).eps))
    ax.set_xlabel("t")
    ax.set_ylabel("|ΔE / E0|")
    ax.set_title("energy drift")
    return ax


def plot_phase(traj: Trajectory, ax: Axes | None = None) -> Axes:
    """Phase portrait of a state trajectory: component pairs (0, 1), (2, 3), ... on one axes
    (a lone last component is plotted against the first)."""
    traj = _single(traj)
    if traj.state is None:
        raise InvalidInputError("plot_phase needs a state trajectory; use plot_orbits")
    ax = _axes(ax)
    names = traj.state_names or tuple(f"y{i}" for i in range(traj.state.shape[-1]))
    s = traj.state.shape[-1]
    if s == 1:
        ax.plot(traj.times, traj.state[:, 0])
        ax.set_xlabel("t")
        ax.set_ylabel(names[0])
        return ax
    pairs = [(i, i + 1) for i in range(0, s - 1, 2)]
    if s % 2 == 1:
        pairs.append((0, s - 1))
    for i, j in pairs:
        (line,) = ax.plot(
            traj.state[:, i], traj.state[:, j], lw=1.0, label=f"{names[i]}–{names[j]}"
        )
        ax.plot(traj.state[0, i], traj.state[0, j], "o", color=line.get_color())
    if len(pairs) == 1:
        ax.set_xlabel(names[pairs[0][0]])
        ax.set_ylabel(names[pairs[0][1]])
    else:
        ax.legend(loc="best", fontsize="small")
    ax.set_title("phase portrait")
    return ax


def _save_figure(fig: Figure, out: Path, fmt: str, overwrite: bool) -> Path:
    """Lay out ``fig`` and write it to ``out`` all-or-nothing (temporary file, then rename)."""
    fig.tight_layout()
    with atomic_write(out, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120)
    return out


def _image_format(out: Path) -> str:
    """The matplotlib format for ``out``'s suffix; InvalidInputError when there is none."""
    import matplotlib

    matplotlib.use("Agg")  # file output only; never opens a window
    import matplotlib.pyplot as plt

    fmt = out.suffix.lstrip(".").lower()
    supported = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if fmt not in supported:
        raise InvalidInputError(
            f"cannot tell the image format from {out.name!r}; use one of "
            f"{sorted('.' + k for k in supported)}"
        )
    return fmt


def plot_trajectory_file(
    path: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = True
) -> Path:
    """Read ``path`` and save a figure to ``out`` (format from its suffix), all-or-nothing.

    Particle trajectories get orbits and, when stored, the energy drift; state trajectories a
    phase portrait (and the energy drift when stored).
    """
    import matplotlib

    matplotlib.use("Agg")  # file output only; never opens a window
    import matplotlib.pyplot as plt

    out = Path(out)
    fmt = _image_format(out)
    traj = read_trajectory(path)
    panels = 2 if traj.energy is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5), squeeze=False)
    try:
        main_plot: Any = plot_orbits if traj.positions is not None else plot_phase
        main_plot(traj, axes[0, 0])
        if panels == 2:
            plot_energy_drift(traj, axes[0, 1])
        system = traj.parameters.get("system", "")
        preset = traj.parameters.get("preset")
        fig.suptitle(f"{system}" + (f" ({preset})" if preset else ""))
        return _save_figure(fig, out, fmt, overwrite)
    finally:
        plt.close(fig)


# ====================================================================== fits
def _series(traj: Trajectory) -> np.ndarray:
    """``(T, K)``: positions flattened (particles) or the state, member 0 of an ensemble."""
    traj = _single(traj)
    if traj.positions is not None:
        return traj.positions.reshape(traj.n_times, -1)
    assert traj.state is not None  # a Trajectory holds positions or state
    return traj.state


def plot_fit(record: FitRecord, fig: Figure | None = None) -> Figure:
    """Four panels of a fit (from :func:`physnode.data.fitfile.read_fit`).

    Top left: observed orbits (dots) and the prediction (solid inside the training window,
    dashed beyond ``train_until``); for a non-particle system, each state component against
    time. Top right: loss history (log scale). Bottom left: parameter history, one line per
    component. Bottom right: prediction error ``|predicted - observed|`` (RMS over bodies and
    axes, or state components) against time, with a vertical line at ``train_until``.
    """
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(12, 9))
    (ax_orbit, ax_loss), (ax_param, ax_err) = fig.subplots(2, 2, squeeze=False)
    obs, pred = _single(record.observed), _single(record.prediction)
    train, beyond = _train_masks(obs.times, record.train_until)
    if obs.positions is not None and pred.positions is not None:
        _plot_fit_orbits(ax_orbit, obs, pred, train, beyond)
    else:
        _plot_fit_components(ax_orbit, obs, pred, train, beyond, record.train_until)
    ax_orbit.set_title("observed (dots) vs predicted (solid: train, dashed: extrapolation)")
    ax_orbit.legend(loc="best", fontsize="small")
    _plot_loss(ax_loss, record.history)
    _plot_parameters(ax_param, record)
    _plot_prediction_error(ax_err, obs, pred, record.train_until, record.fit_until)
    if record.ensemble is not None:
        _plot_spread(ax_err, obs, record.ensemble["spread"])
    model = record.settings.get("model", "")
    status = " (interrupted)" if record.interrupted else ""
    fig.suptitle(f"fit: {model} model, data {record.data_file}{status}")
    return fig


def _train_masks(t: np.ndarray, train_until: float) -> tuple[np.ndarray, np.ndarray]:
    """``(train, beyond)`` boolean masks over ``t``; the boundary sample is in both, so the
    solid and the dashed line join up."""
    train = t <= train_until
    beyond = np.concatenate([train[1:], [False]]) != train
    beyond |= ~train
    return train, beyond


def _plot_fit_orbits(
    ax: Axes, obs: Trajectory, pred: Trajectory, train: np.ndarray, beyond: np.ndarray
) -> None:
    """Particle fits: predicted paths (solid, then dashed) over the observed ones (dots)."""
    assert obs.positions is not None and pred.positions is not None  # checked by plot_fit
    dim = obs.positions.shape[-1]
    for i in range(obs.positions.shape[1]):
        ox = obs.positions[:, i, 0]
        oy = obs.positions[:, i, 1] if dim >= 2 else np.zeros_like(ox)
        px = pred.positions[:, i, 0]
        py = pred.positions[:, i, 1] if dim >= 2 else np.zeros_like(px)
        (line,) = ax.plot(px[train], py[train], lw=1.5, label=f"body {i + 1}")
        color = line.get_color()
        ax.plot(px[beyond], py[beyond], "--", lw=1.5, color=color)
        ax.plot(ox, oy, ".", ms=3, color=color, alpha=0.5)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _plot_fit_components(
    ax: Axes,
    obs: Trajectory,
    pred: Trajectory,
    train: np.ndarray,
    beyond: np.ndarray,
    train_until: float,
) -> None:
    """State fits: each predicted component against time over the observed one (dots)."""
    t = obs.times
    o, p = _series(obs), _series(pred)
    names = obs.state_names or tuple(f"y{k}" for k in range(o.shape[1]))
    for k in range(o.shape[1]):
        (line,) = ax.plot(t[train], p[train, k], lw=1.5, label=names[k])
        ax.plot(t[beyond], p[beyond, k], "--", lw=1.5, color=line.get_color())
        ax.plot(t, o[:, k], ".", ms=3, color=line.get_color(), alpha=0.5)
    ax.axvline(train_until, color="grey", ls=":", lw=1)
    ax.set_xlabel("t")


def _plot_loss(ax: Axes, history: Mapping[str, Any]) -> None:
    """The loss against the epoch, log scale; the validation loss (where scored) as dots."""
    epochs = np.asarray(history["epoch"])
    loss = np.asarray(history["loss"], dtype=float)
    tiny = np.finfo(np.float64).tiny
    if loss.size:
        ax.semilogy(epochs, np.maximum(loss, tiny), label="training")
    valid = np.asarray(history.get("validation", ()), dtype=float)
    scored = np.isfinite(valid)
    if scored.any():
        ax.semilogy(epochs[scored], np.maximum(valid[scored], tiny), ".", label="validation")
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss")


def _plot_parameters(ax: Axes, record: FitRecord) -> None:
    """Each ``param/...`` history component against the epoch; the true masses dotted."""
    epochs = np.asarray(record.history["epoch"])
    for key, values in record.history.items():
        if not key.startswith("param/"):
            continue
        name = key[len("param/") :]
        flat = np.asarray(values, dtype=float).reshape(len(values), -1)
        for j in range(flat.shape[1]):
            label = name if flat.shape[1] == 1 else f"{name}[{j}]"
            ax.plot(epochs[: len(flat)], flat[:, j], lw=1.2, label=label)
    if record.observed.masses is not None and "param/masses" in record.history:
        for m in np.atleast_1d(_single(record.observed).masses):
            ax.axhline(float(m), color="grey", ls=":", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_title("parameters (dotted: true masses)")
    if ax.lines:
        ax.legend(loc="best", fontsize="small")


def _plot_prediction_error(
    ax: Axes, obs: Trajectory, pred: Trajectory, train_until: float, fit_until: float | None = None
) -> None:
    """RMS of ``predicted - observed`` over the components against time, log scale; the
    validation window (``fit_until`` to ``train_until``) shaded."""
    err = np.sqrt(np.mean((_series(pred) - _series(obs)) ** 2, axis=1))
    # Exact zeros (the shared start) cannot be shown on a log axis: leave them out.
    ax.semilogy(obs.times, np.where(err > 0, err, np.nan))
    ax.axvline(train_until, color="k", ls="--", lw=1, label="train_until")
    if fit_until is not None and fit_until < train_until:
        ax.axvspan(fit_until, train_until, color="grey", alpha=0.15, label="validation")
    ax.set_xlabel("t")
    ax.set_ylabel("RMS error")
    ax.set_title("prediction error")
    ax.legend(loc="best", fontsize="small")


def _plot_spread(ax: Axes, obs: Trajectory, spread: np.ndarray) -> None:
    """An ensemble's spread as a shaded band under the error curve: the RMS over the same
    components (positions, or the state) of the members' standard deviation ``(T, D)``."""
    k = _series(obs).shape[1]  # the first k state components are what the error curve shows
    band = np.sqrt(np.mean(np.asarray(spread)[:, :k] ** 2, axis=1))
    positive = band[band > 0]
    # the members share the start (zero spread): floor the band a decade below its least
    # positive value, so the log axis keeps the error curve's range
    floor = 0.1 * float(positive.min()) if positive.size else np.finfo(np.float64).tiny
    ax.fill_between(obs.times, floor, np.maximum(band, floor), color="C1", alpha=0.3,
                    label="ensemble spread (1 std)")  # fmt: skip
    ax.legend(loc="best", fontsize="small")


def plot_fit_file(
    path: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = True
) -> Path:
    """Read the fit file ``path`` and save :func:`plot_fit`'s figure to ``out``, all-or-nothing."""
    from physnode.data.fitfile import read_fit

    out = Path(out)
    fmt = _image_format(out)
    record = read_fit(path)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 9))
    try:
        plot_fit(record, fig)
        return _save_figure(fig, out, fmt, overwrite)
    finally:
        plt.close(fig)
