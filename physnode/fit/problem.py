"""From a trajectory to a fitting problem: the model, its start, the observations."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from physnode.data import Trajectory
from physnode.errors import DataError, InvalidInputError
from physnode.models import AUTO, CorrectionScales, HybridModel, InitialState, NeuralODE
from physnode.models.registry import is_particle_system, resolve_correction
from physnode.models.symbolic import COEFFICIENTS, StateTerms, SymbolicTerms
from physnode.systems import SYSTEMS, NBody, make_system
from physnode.systems.base import System, inverse_softplus

INITIAL_STATE_NAMES = ("y0", "velocities")
OBSERVE = ("auto", "positions")


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
        n_fit: number of leading samples the gradient steps fit (``n_train`` without a
            validation window); samples ``n_fit:n_train`` are the validation window.
        learned: names of the learned physical parameters.
        particles: ``(N, D)`` for particle data, else ``None``.
        state_names: names of the state components for state data, else ``None``.
        correction: the kind of the hybrid model's correction (``"auto"`` resolved), else
            ``None``.
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
    correction: str | None = None
    n_fit: int = 0  # 0: the whole training window (no validation window)

    def __post_init__(self) -> None:
        if not self.n_fit:
            self.n_fit = self.n_train

    def residual(self, ys: torch.Tensor, m: int) -> torch.Tensor:
        """Scaled misfit of a solution ``ys`` (shape ``(m, D)``) at the first ``m`` data
        times: shape ``(m, M)``, ``(ys[:, index] - observed[:m]) / scale``."""
        return (ys[:, self.index] - self.observed[:m]) / self.scale

    def physical(self) -> dict[str, np.ndarray]:
        """Current values of the learned physical parameters, as numpy copies (``{}`` for a
        neural ODE)."""
        if self.system is None:
            return {}
        values = self.system.physical_parameters()
        return {n: values[n].detach().cpu().numpy().copy() for n in self.learned}

    def set_physical(self, name: str, value: torch.Tensor) -> None:
        """Set a learnable physical parameter to the natural ``value`` (a positive one is
        stored through the inverse softplus). No gradient is recorded."""
        module = self.system.params[name]
        with torch.no_grad():
            if module.positive:
                module.raw.copy_(inverse_softplus(value.clamp_min(1e-300)))
            else:
                module.raw.copy_(value)


class _Observed(NamedTuple):
    """What the data say, before any model is built."""

    observations: np.ndarray  # (T, M)
    index: np.ndarray  # (M,): observed state components
    start: np.ndarray  # (D,): first state (velocities estimated when unobserved)
    system: System | None
    particles: tuple[int, int] | None
    state_names: tuple[str, ...] | None
    second_order: bool
    learn: tuple[str, ...]  # ``learn``, plus "velocities" when they must be estimated


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
    correction: str = AUTO,
    terms: Sequence[str] = (),
    coefficients: Sequence[float] | None = None,
    validation: float = 0.0,
    init_params: Mapping[str, float] | None = None,
) -> FitProblem:
    """Build the model and the observations from ``data`` (see :class:`FitProblem`);
    ``correction`` is the kind of the hybrid model's correction (see
    :data:`physnode.models.CORRECTIONS`; other models refuse any but ``"auto"``); ``terms``
    adds named terms (:class:`~physnode.models.symbolic.SymbolicTerms`) with learned
    ``coefficients`` to a physics model (particle data only); ``validation`` is the fraction
    of the training window's time span, at its end, held out of the gradient steps
    (:func:`_fitting_samples`); ``init_params`` the starting values of learned physical
    parameters (default: the system's defaults; masses: ``init_masses``)."""
    times = _data_times(data)
    n_train, until = _training_samples(times, train_until)
    n_fit = _fitting_samples(times, n_train, until, validation)
    torch.manual_seed(seed)
    params = dict(data.parameters)
    physical = () if model == "neural" else _physical_names(learn)
    if data.positions is not None:
        seen = _observe_particles(data, times, observe, params, physical, init_masses, learn)
    elif data.state is not None:
        seen = _observe_state(data, params, physical, learn)
    else:  # pragma: no cover - Trajectory validation guarantees one of them
        raise DataError("the data hold neither positions nor a state")
    _start_params(seen.system, init_params or {}, physical)
    if seen.system is not None and physical:  # the terms' coefficients come with the terms
        seen.system.set_learnable([n for n in physical if n != COEFFICIENTS])
    kind = _correction_kind(model, correction, seen)
    if terms and model != "physics":
        raise InvalidInputError(f"terms= are for model='physics'; got model={model!r}")
    # the scales read the fitting window only: nothing the fit trains on sees the validation
    spec = _Network(hidden, kind, _scales(seen, times, n_fit, kind), tuple(terms), coefficients)
    net, system = _make_model(model, seen, spec)
    if terms:  # their coefficients are learned with the physics
        system.set_learnable(COEFFICIENTS)
        physical = (*(n for n in physical if n != COEFFICIENTS), COEFFICIENTS)
    start = _initial_state(seen, y0)
    observed = torch.as_tensor(seen.observations, dtype=torch.float64)
    scale = _observation_scale(observed[:n_fit], seen.particles, len(seen.index))
    return FitProblem(
        model=net.to(device),
        system=system,
        start=start.to(device),
        times=times,
        observed=observed.to(device),
        index=torch.as_tensor(seen.index, dtype=torch.long, device=device),
        scale=scale.to(device),
        n_train=n_train,
        learned=physical,
        particles=seen.particles,
        state_names=seen.state_names,
        correction=kind,
        n_fit=n_fit,
    )


def _data_times(data: Trajectory) -> np.ndarray:
    """The data times as float64, refusing data a fit cannot use."""
    if data.is_ensemble:
        raise DataError("fitting an ensemble file is not supported; fit one member at a time")
    times = np.asarray(data.times, dtype=np.float64)
    if len(times) < 3:
        raise DataError(f"the data have {len(times)} samples; a fit needs at least 3")
    return times


def _training_samples(times: np.ndarray, train_until: float | None) -> tuple[int, float]:
    """How many leading samples lie in the training window (default: the first half), and the
    window's end time."""
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
    return n_train, float(train_until)


def _fitting_samples(times: np.ndarray, n_train: int, until: float, validation: float) -> int:
    """How many leading samples the gradient steps fit: those at ``t <= t0 + (1 - validation)
    (until - t0)``. The window is cut by time, not by index, so irregular samples are held
    out by when they were taken; ``validation = 0``: all ``n_train``."""
    if validation == 0:
        return n_train
    cut = float(times[0] + (1.0 - validation) * (until - times[0]))
    n_fit = int(np.searchsorted(times, cut, side="right"))
    if n_fit < 3 or n_fit >= n_train:
        raise InvalidInputError(
            f"validation={validation:g} holds out t in ({cut:g}, {until:g}]: "
            f"{n_train - n_fit} of the {n_train} training samples, leaving {n_fit} to fit; "
            "the fit needs at least 3 and the validation window at least 1 (choose another "
            "validation, or 0 for none)"
        )
    return n_fit


def _physical_names(learn: tuple[str, ...]) -> tuple[str, ...]:
    """The physical parameters among ``learn`` (everything but the initial state)."""
    return tuple(n for n in learn if n not in INITIAL_STATE_NAMES)


def _observe_particles(
    data: Trajectory, times: np.ndarray, observe: str, params: dict,
    physical: tuple[str, ...], init_masses, learn: tuple[str, ...],
) -> _Observed:  # fmt: skip
    """Positions (and velocities unless ``observe="positions"`` or absent) of N bodies in D
    dimensions; unobserved initial velocities are estimated and learned."""
    t_len, n, d = data.positions.shape
    q = data.positions.reshape(t_len, n * d)
    # observe="positions": the file's velocities are not data, not even the starting ones
    has_v = data.velocities is not None and observe != "positions"
    v0 = (
        data.velocities[0].reshape(-1)
        if has_v
        else _finite_difference_velocities(times, data.positions).reshape(-1)
    )
    if not has_v:
        obs = q
        index = np.arange(n * d)
    else:
        obs = np.concatenate([q, data.velocities.reshape(t_len, n * d)], axis=1)
        index = np.arange(2 * n * d)
    system = _particle_system(data, n, d, params, physical, init_masses)
    if not has_v and not any(x in learn for x in INITIAL_STATE_NAMES):
        learn = (*learn, "velocities")  # unobserved velocities: estimated, then learned
    start = np.concatenate([q[0], v0])
    return _Observed(obs, index, start, system, (n, d), None, True, learn)


def _observe_state(
    data: Trajectory, params: dict, physical: tuple[str, ...], learn: tuple[str, ...]
) -> _Observed:
    """A state-vector trajectory of the named system (every component observed)."""
    obs = data.state
    system = _state_system(str(params.get("system", "n-body")), params, physical)
    second_order = bool(system.second_order) if system is not None else False
    return _Observed(
        obs, np.arange(obs.shape[1]), obs[0], system, None, data.state_names, second_order, learn
    )


# -- models ------------------------------------------------------------------------------------
class _Network(NamedTuple):
    """What a model's network is built from."""

    hidden: int  # width of its hidden layers
    correction: str | None  # the hybrid model's kind of correction (resolved), else None
    scales: CorrectionScales  # typical magnitudes of the training data
    terms: tuple[str, ...] = ()  # the physics model's extra named terms (symbolic refit)
    coefficients: tuple[float, ...] | None = None  # their starting coefficients


def _physics_model(seen: _Observed, spec: _Network) -> nn.Module:
    if not spec.terms:
        return HybridModel(seen.system)
    if not is_particle_system(seen.system):
        return HybridModel(seen.system, StateTerms(seen.system, spec.terms, spec.coefficients))
    return HybridModel(seen.system, SymbolicTerms(seen.system, spec.terms, spec.coefficients))


def _hybrid_model(seen: _Observed, spec: _Network) -> nn.Module:
    return HybridModel.with_correction(
        seen.system, spec.correction or AUTO, spec.scales, hidden=spec.hidden
    )


def _neural_model(seen: _Observed, spec: _Network) -> nn.Module:
    dim = len(seen.start)
    return NeuralODE(
        dim, second_order=seen.second_order, hidden=spec.hidden, scale=spec.scales.state
    )


#: How each ``model`` choice builds its vector field from the observations.
MODEL_BUILDERS: dict[str, Callable[[_Observed, _Network], nn.Module]] = {
    "physics": _physics_model,
    "hybrid": _hybrid_model,
    "neural": _neural_model,
}
#: The ``model`` choices, in the order the builders are declared.
MODELS = tuple(MODEL_BUILDERS)


def _make_model(model: str, seen: _Observed, spec: _Network) -> tuple[nn.Module, System | None]:
    """The vector field, and the physics it contains (``None`` for a neural ODE)."""
    builder = MODEL_BUILDERS.get(model)
    if builder is None:
        raise InvalidInputError(f"unknown model {model!r}; choose one of {list(MODELS)}")
    net = builder(seen, spec)
    return net, None if model == "neural" else seen.system


def _correction_kind(model: str, correction: str, seen: _Observed) -> str | None:
    """The hybrid model's kind of correction (``"auto"`` resolved for the data); ``None`` for
    the other models, which refuse an explicit kind."""
    if model != "hybrid":
        if correction != AUTO:
            raise InvalidInputError(
                f"correction={correction!r} is for model='hybrid'; the {model!r} model has no "
                "correction (leave correction at 'auto')"
            )
        return None
    return resolve_correction(correction, seen.system)


def _scales(seen: _Observed, times: np.ndarray, n_train: int, kind: str | None) -> CorrectionScales:
    """Typical magnitudes of the training window (:class:`CorrectionScales`).

    ``state``, what the full-state networks divide by, is the RMS of the initial state. For
    particle data and a particle kind of correction: the positions and velocities of the
    training window (velocities by finite differences where unobserved) and the physics'
    accelerations along them, at its starting parameters (finite differences of the velocities
    where the physics gives none); noise-robust, unlike second differences of positions.
    """
    state = float(np.sqrt(np.mean(seen.start**2))) or 1.0
    if seen.particles is None or kind is None or not is_particle_system(seen.system):
        return CorrectionScales(state=state)
    n, d = seen.particles
    t = times[:n_train]
    q = seen.observations[:n_train, : n * d].reshape(n_train, n, d)
    if seen.observations.shape[1] >= 2 * n * d:
        v = seen.observations[:n_train, n * d : 2 * n * d].reshape(n_train, n, d)
    else:
        v = np.gradient(q, t, axis=0)
    with torch.no_grad():
        # positions then velocities, as the state lays them out
        y = torch.as_tensor(np.concatenate([q.reshape(n_train, -1), v.reshape(n_train, -1)], 1))
        f = seen.system(torch.zeros((), dtype=torch.float64), y)
    a = f[:, n * d :].numpy().reshape(n_train, n, d)
    if not np.any(a):
        a = np.gradient(v, t, axis=0)
    return CorrectionScales.from_particles(q, v, a, state=state)


def _initial_state(seen: _Observed, y0: torch.Tensor | None) -> InitialState:
    """The start: ``y0`` if given, else the first sample; learned as ``seen.learn`` says."""
    dim = len(seen.start)
    start = torch.as_tensor(seen.start, dtype=torch.float64) if y0 is None else y0
    start = torch.as_tensor(start, dtype=torch.float64)
    if start.shape != (dim,):
        raise InvalidInputError(
            f"y0 must have shape ({dim},) for these data; got {tuple(start.shape)}"
        )
    learn = seen.learn
    learn_start = "all" if "y0" in learn else ("velocities" if "velocities" in learn else "none")
    if learn_start == "velocities" and not seen.second_order:
        raise InvalidInputError("learning 'velocities' needs particle data; use 'y0' instead")
    return InitialState(start, learn_start)


def _observation_scale(
    train: torch.Tensor, particles: tuple[int, int] | None, m: int
) -> torch.Tensor:
    """Per-component scale of the training observations ``train`` (shape ``(n_train, m)``)."""
    # components of one kind share a scale (all positions alike, all velocities alike) so the
    # loss is invariant under rotations of the data
    if particles is None:
        return torch.full((m,), float(train.std()), dtype=train.dtype)
    return _group_scale(train, particles, m)


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
    info = SYSTEMS["n-body"]  # what a particle file may set: read from the registry
    given = {k: float(params.get(k, info.defaults[k])) for k in info.settable}
    system = NBody(masses, dim=d, **given)
    _check_learnable(system, physical, "n-body")
    return system


def _start_params(
    system: System | None, init: Mapping[str, float], physical: tuple[str, ...]
) -> None:
    """Give learned parameters their starting values ``init`` (validated like any value)."""
    for name, value in init.items():
        if system is None or name not in physical or name in ("masses", COEFFICIENTS):
            raise InvalidInputError(
                f"init_params gives {name!r}, which is not a learned physical parameter of "
                f"this fit (learned: {[n for n in physical if n != COEFFICIENTS]}; masses "
                "start from init_masses)"
            )
        system.add_parameter(name, float(value))


def _state_system(name: str, params: dict, physical: tuple[str, ...]) -> System:
    if name not in SYSTEMS:
        raise DataError(f"the data's system {name!r} is unknown; valid systems are {list(SYSTEMS)}")
    known = SYSTEMS[name].settable
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
