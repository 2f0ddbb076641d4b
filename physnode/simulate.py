"""Simulate a registered system and return its sampled :class:`~physnode.data.Trajectory`.

The library behind ``physnode simulate``; no CLI imports here::

    from physnode.simulate import simulate
    traj, summary = simulate("three-body", preset="figure-eight", periods=10, points=1000)
    print(summary.energy_error)   # max |E - E0| / |E0| over the output points

    more, _ = simulate("three-body", initial="fig8.h5", t_end=5.0)  # continue from its last frame
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from physnode.constraints import validate
from physnode.data import InitialConditions, Trajectory, add_noise, read_initial
from physnode.errors import InvalidInputError
from physnode.solver import solve
from physnode.solver.options import SolverOptions
from physnode.solver.symplectic import SYMPLECTIC_METHODS, integrate_symplectic, steps_over
from physnode.solver.tableaus import RK_METHODS
from physnode.systems import SYSTEMS, RunOptions, RunSetup, System, SystemInfo, system_info

__all__ = ["ALL_METHODS", "SimulationSummary", "simulate"]

#: Every method name :func:`simulate` accepts: Runge–Kutta (adaptive or fixed) and symplectic.
ALL_METHODS: tuple[str, ...] = (*RK_METHODS, *SYMPLECTIC_METHODS)

_N_CHUNKS = 20  # progress granularity; chunking is the same with or without a callback


@dataclass(frozen=True)
class SimulationSummary:
    """What a run did.

    Attributes:
        energy_error: ``max_t |E(t) - E0| / |E0|`` of the clean trajectory (absolute when
            ``E0 == 0``), or None for systems without an energy.
        n_accepted, n_rejected: accepted and rejected steps (symplectic: steps taken, 0);
            a batch with per-sample steps: summed over its members.
        nfe: function evaluations of the vector field (symplectic: force evaluations); a
            batch with per-sample steps: member evaluations divided by the batch size.
        wall_time: seconds spent integrating.
        t_end: the final time reached (``t0 + run length``). method: the integration method.
    """

    energy_error: float | None
    n_accepted: int
    n_rejected: int
    nfe: int
    wall_time: float
    t_end: float
    method: str


def simulate(
    system: str = "three-body",
    *,
    preset: str = "figure-eight",
    periods: float | None = None,
    t_end: float | None = None,
    points: int = 1000,
    noise: float = 0.0,
    seed: int = 0,
    method: str = "dop853",
    rtol: float = 1e-13,
    atol: float = 1e-13,
    dim: int = 2,
    device: str = "cpu",
    bodies: int = 5,
    params: Mapping[str, float] | None = None,
    batch: int | None = None,
    step_size: float | None = None,
    progress: Callable[[float], None] | None = None,
    masses: Sequence[float] | None = None,
    initial: str | os.PathLike[str] | InitialConditions | None = None,
    members: tuple[int, int] | None = None,
    steps: str | None = None,
) -> tuple[Trajectory, SimulationSummary]:
    """Integrate ``system`` in float64 and sample it at ``points`` equally spaced times.

    Args:
        system: a name from :data:`physnode.systems.SYSTEMS` (``three-body``, ``n-body``,
            ``pendulum``, ...).
        preset: three-body preset (see :data:`physnode.systems.VALID_PRESETS`).
        periods: run length in periods of a periodic three-body preset; exclusive with ``t_end``.
            Default: 10 periods for periodic presets.
        t_end: run length in time units; default 70 for ``pythagorean``, else 10.
        points: number of output samples, >= 2 (including ``t = 0``).
        noise: relative Gaussian noise level added to positions/velocities/state after the
            energy is computed (the stored energy stays clean).
        seed: seed of the ``random`` preset, of ``n-body`` starts, of batches and of the noise.
        method: an adaptive Runge–Kutta method (``dop853``, ``dopri5``, ...), a fixed-step one
            (``rk4``, ...) or a symplectic one (``leapfrog``, ``yoshida4``).
        rtol, atol: tolerances of the adaptive methods.
        dim: 2 or 3 (particle systems).
        device: torch device for the integration (``cpu``, ``cuda``).
        bodies: number of bodies of ``n-body``.
        params: physical parameters overriding the system's defaults (those in its
            :attr:`~physnode.systems.SystemInfo.settable`; three-body / n-body: ``G``,
            ``softening``).
        batch: three-body ensemble of ``batch`` perturbed figure-eight starts.
        step_size: step of fixed-step and symplectic methods; default ``period / 2000`` or
            ``t_end / 20000``.
        progress: called with the completed fraction (0..1) after each chunk of output points.
        masses: particle systems: one positive mass per body, in place of the preset's or the
            random start's (the start's positions and velocities are kept, so a periodic
            preset is no longer periodic; ``periods`` still counts the preset's period).
        initial: particle systems: the start, in place of the preset's or the random one: an
            :class:`~physnode.data.InitialConditions` or a file :func:`~physnode.data.read_initial`
            reads (JSON, CSV, or an H5MD trajectory's last frame). Its bodies and dimension are
            the run's; its masses are used, else ``masses``, else unit masses (both: refused);
            the output times run from its ``t0`` (an H5MD file's last time, else 0) to
            ``t0 + t_end`` (default ``t_end`` 10), so a continued run joins the file's. The
            source, its SHA-256 and ``t0`` are recorded (``initial``, ``initial_sha256``,
            ``initial_t0``). ``preset``, ``dim``, ``bodies``, ``batch`` and ``periods`` are
            refused beside it.
        members: with ``batch``: integrate only members ``lo .. hi - 1`` of the batch
            (``(lo, hi)``, ``0 <= lo < hi <= batch``), one rank's share of a sharded ensemble.
            Their starts and their noise draws are exactly those the whole batch gives them
            (the batch is drawn whole and sliced). Fixed-step and symplectic methods then give
            bit-identical members; adaptive ones step each member on its own (``steps``), so a
            share agrees with the whole batch to rounding (an ulp of a step size now and then,
            from vectorised arithmetic), or with ``steps="shared"`` only to the tolerances.
        steps: a ``batch`` with an adaptive method: ``"per-sample"`` (default) steps each
            member on its own (``options["steps"]`` of :func:`~physnode.solver.solve`; a member
            that fails fails the run with its number), ``"shared"`` one step sequence for the
            whole ensemble (the pace of its hardest member; kept for comparison). Recorded.

    Returns:
        ``(trajectory, summary)``.

    Raises:
        InvalidInputError: unknown system, preset, method or parameter; bad run length or point
            count; a bad initial condition (DataError: its file is unreadable).
            StepSizeTooSmallError and other solver errors propagate from the engine.
    """
    _check_settings(method, points, noise, periods, t_end)
    info = system_info(system)
    _refuse_inapplicable(
        info, method, step_size, preset=preset, dim=dim, bodies=bodies, masses=masses
    )
    steps = _steps(steps, method, batch)
    initial = _initial(
        initial, info, preset=preset, dim=dim, bodies=bodies, batch=batch, periods=periods
    )
    options = RunOptions(
        preset=preset, dim=dim, seed=seed, bodies=bodies, batch=batch,
        masses=None if masses is None else tuple(float(m) for m in masses), initial=initial,
    )  # fmt: skip
    setup = _members_of(info.setup(options, params), batch, members)
    span, run_info = _run_length(system, setup, periods, t_end)
    step_size = _step_size(step_size, setup.period, span)
    meta = {**setup.parameters, **run_info, "method": method, "seed": int(seed)}
    if _adaptive(method):  # only the settings that acted are recorded
        meta.update(rtol=float(rtol), atol=float(atol))
        if steps is not None:
            meta.update(steps=steps)
    else:
        meta.update(step_size=float(step_size))
    module, y0 = _on_device(setup, device)
    times = setup.t0 + np.linspace(0.0, span, points)

    start = time.perf_counter()
    ys, n_acc, n_rej, nfe = _integrate(
        module, y0, times, method, rtol, atol, step_size, progress, steps
    )
    wall = time.perf_counter() - start

    traj, energy_error = _record(module, times, ys, meta, noise, seed, members, batch)
    summary = SimulationSummary(energy_error, n_acc, n_rej, nfe, wall, float(times[-1]), method)
    return traj, summary


# ---------------------------------------------------------------------------- the settings
def _check_settings(
    method: str, points: int, noise: float, periods: float | None, t_end: float | None
) -> None:
    """InvalidInputError for a bad method, point count, noise level or run length pair."""
    if method not in ALL_METHODS:
        raise InvalidInputError(
            f"unknown method {method!r}; valid methods are {list(ALL_METHODS)}."
        )
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise InvalidInputError(f"points must be an integer >= 2; got {points!r}.")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise InvalidInputError(f"noise must be a finite number >= 0; got {noise!r}.")
    if periods is not None and t_end is not None:
        raise InvalidInputError("give either periods or t_end, not both.")


def _steps(steps: str | None, method: str, batch: int | None) -> str | None:
    """The step mode of a ``batch`` with an adaptive method (default ``"per-sample"``), else
    ``None``; InvalidInputError for one given where it would not act, or unknown."""
    if batch is None or not _adaptive(method):
        if steps is not None:
            raise InvalidInputError(
                "steps applies to a batch (an ensemble) integrated by an adaptive method; "
                f"leave it out{' or give batch' if batch is None else f' for {method!r}'}."
            )
        return None
    steps = "per-sample" if steps is None else steps
    validate({"steps": steps}, {"steps": SolverOptions.CONSTRAINTS["steps"]})
    return steps


def _adaptive(method: str) -> bool:
    return method in RK_METHODS and RK_METHODS[method].adaptive


def _refuse_inapplicable(
    info: SystemInfo, method: str, step_size: float | None, **given: Any
) -> None:
    """InvalidInputError for a setting that would be ignored: a run option (``preset``,
    ``dim``, ``bodies``) changed from its default for a system that reads none, or a
    ``step_size`` for an adaptive method."""
    for name, value in given.items():
        if name not in info.options and _changed(name, value):
            applies = [n for n, i in SYSTEMS.items() if name in i.options]
            raise InvalidInputError(
                f"{name} applies to the {', '.join(applies)} system(s), not {info.name!r}."
            )
    if step_size is not None and _adaptive(method):
        raise InvalidInputError(
            f"step_size applies to fixed-step and symplectic methods, not {method!r} "
            "(adaptive: it chooses its own steps from rtol/atol)."
        )


#: Why :func:`simulate` refuses each of these settings beside ``initial``, and what to do.
_GIVEN_BY_INITIAL = {
    "preset": "the start is the initial condition's; leave out preset",
    "dim": "the dimension is the initial condition's; leave out dim",
    "bodies": "the body count is the initial condition's; leave out bodies",
    "batch": "an initial condition is one start, not an ensemble; leave out batch",
    "periods": "an initial condition has no period; give t_end instead",
}


def _changed(name: str, value: Any) -> bool:
    """Whether ``value`` differs from :func:`simulate`'s default of ``name``."""
    default = inspect.signature(simulate).parameters[name].default
    return value is not None if default is None else value != default


def _initial(
    initial: str | os.PathLike[str] | InitialConditions | None, info: SystemInfo, **given: Any
) -> InitialConditions | None:
    """The initial condition ``initial`` is or names (its file read); InvalidInputError for a
    non-particle system, or beside a setting it replaces (``given`` changed from its default)."""
    if initial is None:
        return None
    if not info.particles:
        particle = [n for n, i in SYSTEMS.items() if i.particles]
        raise InvalidInputError(
            f"initial applies to the particle systems ({', '.join(particle)}), not "
            f"{info.name!r} (its start is the system's own)."
        )
    for name, value in given.items():
        if _changed(name, value):
            raise InvalidInputError(
                f"{name} cannot be combined with initial: {_GIVEN_BY_INITIAL[name]}."
            )
    if isinstance(initial, InitialConditions):
        return initial
    if not isinstance(initial, (str, os.PathLike)):
        raise InvalidInputError(
            f"initial must be a file name or InitialConditions; got {type(initial).__name__}."
        )
    return read_initial(initial)


def _members_of(setup: RunSetup, batch: int | None, members: tuple[int, int] | None) -> RunSetup:
    """``setup`` with its batch of starts cut to ``members`` (``(lo, hi)``); InvalidInputError
    for ``members`` without a batch or outside it."""
    if members is None:
        return setup
    if batch is None:
        raise InvalidInputError("members applies to a batch (an ensemble) only; give batch too.")
    lo, hi = members
    if not 0 <= lo < hi <= batch:
        raise InvalidInputError(
            f"members {members!r} must be (lo, hi) with 0 <= lo < hi <= batch ({batch})."
        )
    return dataclasses.replace(setup, y0=setup.y0[lo:hi])


def _run_length(
    system: str, setup: RunSetup, periods: float | None, t_end: float | None
) -> tuple[float, dict[str, Any]]:
    """The final time and the parameters that describe it."""
    period = setup.period
    if periods is not None:
        if period is None:
            preset = setup.parameters.get("preset")
            raise InvalidInputError(
                f"periods applies to periodic presets only; {system!r}"
                + (f" preset {preset!r}" if preset is not None else "")
                + " has no period: give t_end instead."
            )
        if not (math.isfinite(periods) and periods > 0):
            raise InvalidInputError(f"periods must be positive; got {periods!r}.")
        return periods * period, {"periods": float(periods), "period": period}
    if t_end is None:
        if period is not None:
            return 10 * period, {"periods": 10.0, "period": period}
        t_end = setup.default_t_end
    if not (math.isfinite(t_end) and t_end > 0):
        raise InvalidInputError(f"t_end must be positive; got {t_end!r}.")
    info: dict[str, Any] = {"t_end": float(t_end)}
    if period is not None:
        info["period"] = period
    return float(t_end), info


def _step_size(step_size: float | None, period: float | None, span: float) -> float:
    """The given step, else ``period / 2000`` or ``span / 20000``; checked positive."""
    if step_size is None:
        step_size = (period / 2000.0) if period is not None else span / 20000.0
    if not (math.isfinite(step_size) and step_size > 0):
        raise InvalidInputError(f"step_size must be positive; got {step_size!r}.")
    return step_size


def _on_device(setup: RunSetup, device: str) -> tuple[System, torch.Tensor]:
    """The system and its float64 start on ``device``; InvalidInputError without CUDA."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device 'cuda' requested but no CUDA GPU is available; use cpu.")
    return setup.system.to(dev), setup.y0.to(device=dev, dtype=torch.float64)


# ----------------------------------------------------------------------------- integration
def _integrate(
    module: torch.nn.Module,
    y0: torch.Tensor,
    times: np.ndarray,
    method: str,
    rtol: float,
    atol: float,
    step_size: float,
    progress: Callable[[float], None] | None,
    steps: str | None = None,
) -> tuple[torch.Tensor, int, int, int]:
    """Integrate over ``times`` in chunks of output points; return ``(ys, acc, rej, nfe)``
    (``nfe``: evaluations of the whole batch; per-sample steps: member evaluations over the
    batch size, the same measure of work)."""
    n = len(times)
    bounds = sorted({round(i * (n - 1) / _N_CHUNKS) for i in range(_N_CHUNKS + 1)})
    out = [y0.unsqueeze(0)]
    y = y0
    n_acc = n_rej = nfe = 0
    symplectic = method in SYMPLECTIC_METHODS
    options = None if symplectic or RK_METHODS[method].adaptive else {"step_size": step_size}
    if steps == "per-sample":
        options = {"steps": steps, "sample_failure": "raise"}
    evals = 0
    if progress is not None:
        progress(0.0)
    with torch.no_grad():
        for a, b in itertools.pairwise(bounds):
            t = torch.as_tensor(times[a : b + 1], dtype=torch.float64, device=y0.device)
            if symplectic:
                ys = integrate_symplectic(module, y, t, step_size, method)
                n_fixed = sum(steps_over(times[i + 1] - times[i], step_size) for i in range(a, b))
                n_acc += n_fixed
                nfe += n_fixed * len(SYMPLECTIC_METHODS[method])
            else:
                sol = solve(module, y, t, rtol=rtol, atol=atol, method=method, options=options)
                ys = sol.ys
                n_acc += sol.stats.n_accepted
                n_rej += sol.stats.n_rejected
                nfe += sol.stats.nfe_forward
                evals += sol.stats.n_sample_evals
            out.append(ys[1:])
            y = ys[-1]
            if progress is not None:
                progress(b / (n - 1))
    if steps == "per-sample":
        nfe = math.ceil(evals / y0.shape[0])
    return torch.cat(out), n_acc, n_rej, nfe


def _energy(module: torch.nn.Module, ys: torch.Tensor) -> np.ndarray | None:
    energy_fn = getattr(module, "energy", None)
    if energy_fn is None:
        return None
    with torch.no_grad():
        return energy_fn(ys).detach().cpu().numpy().astype(np.float64)


def _energy_error(energy: np.ndarray | None) -> float | None:
    if energy is None:
        return None
    e0 = energy[0]
    diff = np.abs(energy - e0)
    scale = np.where(e0 != 0, np.abs(e0), 1.0)
    return float(np.max(diff / scale))


def _record(
    module: System,
    times: np.ndarray,
    ys: torch.Tensor,
    meta: dict[str, Any],
    noise: float,
    seed: int,
    members: tuple[int, int] | None = None,
    batch: int | None = None,
) -> tuple[Trajectory, float | None]:
    """The system's trajectory of ``ys`` with its clean energy, then noise; and the energy error.
    ``members``: ``ys`` holds only these members of a ``batch``; they get the noise the whole
    batch's trajectory would give them."""
    energy = _energy(module, ys)
    traj = module.to_trajectory(times, ys.detach().cpu().numpy(), energy=energy, parameters=meta)
    if noise > 0 and members is not None and batch is not None:
        traj = _add_member_noise(traj, float(noise), int(seed), members, batch)
    elif noise > 0:
        traj = add_noise(traj, float(noise), int(seed), relative=True)
    else:
        traj.parameters["noise_std"] = 0.0
    return traj, _energy_error(energy)


#: Values drawn at a time when a share of an ensemble draws the whole batch's noise.
_NOISE_CHUNK = 1 << 20


def _add_member_noise(
    traj: Trajectory, std: float, seed: int, members: tuple[int, int], batch: int
) -> Trajectory:
    """:func:`~physnode.data.add_noise` (relative) of members ``lo .. hi - 1`` of a ``batch``:
    ``traj`` holds only those members, and each gets exactly the draws it would get in the
    whole batch's trajectory.

    ``add_noise`` draws positions, then velocities, then the state, each over the whole
    ensemble in C order (time first, so members interleave). The same generator is run over
    the whole batch's shape, a few time samples at a time (memory stays bounded), and the
    members' slice kept. The relative scale is per member already (RMS over time only).
    """
    if seed < 0:
        raise InvalidInputError(f"seed must be an int >= 0; got {seed!r}")
    rng = np.random.default_rng(seed)
    lo, hi = members
    noisy: dict[str, np.ndarray] = {}
    for name in ("positions", "velocities", "state"):  # add_noise's order
        x = getattr(traj, name)
        if x is None:
            continue
        full = (x.shape[0], batch, *x.shape[2:])
        step = max(1, _NOISE_CHUNK // math.prod(full[1:]))  # time samples per draw
        draws = np.concatenate(
            [
                rng.standard_normal((min(step, full[0] - t), *full[1:]))[:, lo:hi]
                for t in range(0, full[0], step)
            ]
        )
        noisy[name] = x + std * np.sqrt(np.mean(x * x, axis=0)) * draws
    parameters = {**traj.parameters, "noise_std": std, "noise_seed": seed, "noise_relative": True}
    return dataclasses.replace(traj, **noisy, parameters=parameters)
