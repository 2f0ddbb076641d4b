"""From a trajectory to a fitting problem: the model, its start, the observations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from physnode.data import Trajectory
from physnode.errors import DataError, InvalidInputError
from physnode.models import HybridModel, InitialState, NeuralODE
from physnode.systems import SYSTEMS, NBody, make_system
from physnode.systems.base import System

PARTICLE_SYSTEMS = ("three-body", "n-body", "kepler")
INITIAL_STATE_NAMES = ("y0", "velocities")


@dataclass
class FitProblem:
    """Everything the optimiser needs, built once from the data.

    Attributes:
        model: the vector field being fitted (``HybridModel`` or ``NeuralODE``).
        system: the known physics (``None`` for a pure neural ODE).
        start: the (possibly learnable) initial state, shape ``(D,)``.
        times: data times, shape ``(T,)`` float64.
        observed: observations, shape ``(T, M)``: observed state components per time.
        index: which state components are observed, shape ``(M,)`` (long).
        scale: per-component scale of the observations, shape ``(M,)`` (residuals are divided
            by it, so positions and velocities weigh alike).
        n_train: number of leading samples in the training window.
        learned: names of the learned physical parameters.
        particles: ``(N, D)`` for particle data, else ``None``.
    """

    model: nn.Module
    system: System | None
    start: InitialState
    times: np.ndarray
    observed: torch.Tensor
    index: torch.Tensor
    scale: torch.Tensor
    n_train: int
    learned: tuple[str, ...]
    particles: tuple[int, int] | None
    state_names: tuple[str, ...] | None


def _finite_difference_velocities(times: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Initial velocities from the first samples (second-order one-sided difference)."""
    if len(times) < 3:
        return (positions[1] - positions[0]) / (times[1] - times[0])
    h1, h2 = times[1] - times[0], times[2] - times[0]
    # derivative at t0 of the quadratic through the first three samples
    w1 = h2 / (h1 * (h2 - h1))
    w2 = -h1 / (h2 * (h2 - h1))
    w0 = -(w1 + w2)
    return w0 * positions[0] + w1 * positions[1] + w2 * positions[2]


def build_problem(
    data: Trajectory,
    *,
    model: str,
    learn: tuple[str, ...],
    train_until: float | None,
    hidden: int,
    init_masses,
    observe: str,
    y0: torch.Tensor | None,
    seed: int,
    device: str,
) -> FitProblem:
    """Build the model and the observations from ``data`` (see :class:`FitProblem`)."""
    if data.is_ensemble:
        raise DataError("fitting an ensemble file is not supported; fit one member at a time")
    times = np.asarray(data.times, dtype=np.float64)
    if len(times) < 3:
        raise DataError(f"the data have {len(times)} samples; a fit needs at least 3")
    if train_until is None:
        train_until = float(times[0] + 0.5 * (times[-1] - times[0]))
    if not (times[0] < train_until <= times[-1]):
        raise InvalidInputError(
            f"train_until={train_until:g} is outside the data (t from {times[0]:g} to "
            f"{times[-1]:g}); choose a time inside that range"
        )
    n_train = int(np.searchsorted(times, train_until, side="right"))
    if n_train < 3:
        raise InvalidInputError(
            f"train_until={train_until:g} leaves {n_train} training samples; at least 3 needed"
        )
    torch.manual_seed(seed)
    params = dict(data.parameters)
    system_name = str(params.get("system", "n-body"))
    physical = tuple(n for n in learn if n not in INITIAL_STATE_NAMES)
    if model == "neural":
        physical = ()  # a neural ODE has no physical parameters

    if data.positions is not None:
        t_len, n, d = data.positions.shape
        q = data.positions.reshape(t_len, n * d)
        has_v = data.velocities is not None
        v0 = (
            data.velocities[0].reshape(-1)
            if has_v
            else _finite_difference_velocities(times, data.positions).reshape(-1)
        )
        start_np = np.concatenate([q[0], v0])
        if observe == "positions" or not has_v:
            obs = q
            index = np.arange(n * d)
        else:
            obs = np.concatenate([q, data.velocities.reshape(t_len, n * d)], axis=1)
            index = np.arange(2 * n * d)
        system = _particle_system(data, n, d, params, physical, init_masses)
        particles = (n, d)
        state_names = None
        second_order = True
        if not has_v and not any(x in learn for x in INITIAL_STATE_NAMES):
            learn = (*learn, "velocities")  # unobserved velocities: estimated, then learned
    elif data.state is not None:
        obs = data.state
        index = np.arange(obs.shape[1])
        start_np = obs[0]
        particles = None
        state_names = data.state_names
        system = _state_system(system_name, params, physical)
        second_order = bool(system.second_order) if system is not None else False
    else:  # pragma: no cover - Trajectory validation guarantees one of them
        raise DataError("the data hold neither positions nor a state")

    if system is not None and physical:
        system.set_learnable(list(physical))
    typical = float(np.sqrt(np.mean(start_np**2))) or 1.0
    if model == "physics":
        net: nn.Module = HybridModel(system)
    elif model == "hybrid":
        net = HybridModel.with_mlp(system, hidden=hidden, scale=typical)
    elif model == "neural":
        net = NeuralODE(len(start_np), second_order=second_order, hidden=hidden, scale=typical)
        system = None
    else:
        raise InvalidInputError(f"unknown model {model!r}; choose physics, hybrid or neural")

    start_tensor = torch.as_tensor(start_np, dtype=torch.float64) if y0 is None else y0
    start_tensor = torch.as_tensor(start_tensor, dtype=torch.float64)
    if start_tensor.shape != (len(start_np),):
        raise InvalidInputError(
            f"y0 must have shape ({len(start_np)},) for these data; got {tuple(start_tensor.shape)}"
        )
    learn_start = "all" if "y0" in learn else ("velocities" if "velocities" in learn else "none")
    if learn_start == "velocities" and not second_order:
        raise InvalidInputError("learning 'velocities' needs particle data; use 'y0' instead")
    start = InitialState(start_tensor, learn_start)

    observed = torch.as_tensor(obs, dtype=torch.float64)
    train = observed[:n_train]
    scale = train.std(dim=0).clamp_min(1e-12)
    # components of one kind share a scale (all positions alike, all velocities alike) so the
    # loss is invariant under rotations of the data
    scale = (
        torch.full_like(scale, float(train.std()))
        if particles is None
        else _group_scale(train, particles, len(index))
    )
    return FitProblem(
        model=net.to(device),
        system=system,
        start=start.to(device),
        times=times,
        observed=observed.to(device),
        index=torch.as_tensor(index, dtype=torch.long, device=device),
        scale=scale.to(device),
        n_train=n_train,
        learned=physical,
        particles=particles,
        state_names=state_names,
    )


def _group_scale(train: torch.Tensor, particles: tuple[int, int], m: int) -> torch.Tensor:
    n, d = particles
    nd = n * d
    out = torch.empty(m, dtype=torch.float64)
    for lo in range(0, m, nd):
        block = train[:, lo : lo + nd]
        out[lo : lo + nd] = (block - block.mean(0)).square().mean().sqrt().clamp_min(1e-12)
    return out


def _particle_system(data, n, d, params, physical, init_masses) -> NBody:
    if "masses" in physical:
        if init_masses is None:
            masses = np.ones(n)
        else:
            masses = np.broadcast_to(np.asarray(init_masses, dtype=np.float64), (n,)).copy()
    elif data.masses is not None:
        masses = data.masses
    else:
        raise DataError(
            "the data file has no masses; learn them (learn=('masses',), CLI: --learn masses)"
        )
    G = float(params.get("G", 1.0))
    softening = float(params.get("softening", 0.0))
    system = NBody(masses, G=G, softening=softening, dim=d)
    _check_learnable(system, physical, "n-body")
    return system


def _state_system(name: str, params: dict, physical: tuple[str, ...]) -> System:
    if name not in SYSTEMS:
        raise DataError(f"the data's system {name!r} is unknown; valid systems are {list(SYSTEMS)}")
    known = SYSTEMS[name].defaults
    # parameters being learned start from the system's defaults, not from the file's values
    given = {k: params[k] for k in known if k in params and k not in physical}
    system = make_system(name, **given)
    _check_learnable(system, physical, name)
    return system


def _check_learnable(system: System, physical: tuple[str, ...], name: str) -> None:
    unknown = [p for p in physical if p not in system.parameter_names]
    if unknown:
        raise InvalidInputError(
            f"cannot learn {unknown}: the {name} system has parameters "
            f"{list(system.parameter_names)} (and the initial state: 'y0' or 'velocities')"
        )
