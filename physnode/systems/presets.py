"""Three-body presets with published initial conditions, and random bound N-body starts.

All presets use ``G = 1`` and are planar; ``dim=3`` embeds them in the ``z = 0`` plane. Values
and measured periods come from ``docs/three-body.md`` (checked there with IAS15).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from physnode.errors import InvalidInputError
from physnode.systems.nbody import NBody, nbody_run_setup
from physnode.systems.registry import RunOptions, RunSetup, SystemInfo, register_system

__all__ = [
    "PRESETS",
    "VALID_PRESETS",
    "ThreeBodyPreset",
    "get_preset",
    "random_nbody",
    "random_three_body_batch",
    "three_body",
]

Vec2 = tuple[float, float]
Triple = tuple[Vec2, Vec2, Vec2]


@dataclass(frozen=True)
class ThreeBodyPreset:
    """Planar three-body initial conditions (``G = 1``).

    ``positions`` and ``velocities`` are ``(3, 2)`` nested tuples; ``period`` is the time after
    which the orbit returns to its start (``None`` when it is not periodic).
    """

    name: str
    masses: tuple[float, float, float]
    positions: Triple
    velocities: Triple
    period: float | None
    description: str
    reference: str


def _collinear(name: str, p1: float, p2: float, period: float, label: str) -> ThreeBodyPreset:
    """Šuvakov–Dmitrašinović start: x = (-1, 0), (1, 0), (0, 0); v = p, p, -2 p."""
    return ThreeBodyPreset(
        name=name,
        masses=(1.0, 1.0, 1.0),
        positions=((-1.0, 0.0), (1.0, 0.0), (0.0, 0.0)),
        velocities=((p1, p2), (p1, p2), (-2 * p1, -2 * p2)),
        period=period,
        description=f"{label} periodic orbit, equal masses, collinear start (measured period).",
        reference="Šuvakov & Dmitrašinović, Phys. Rev. Lett. 110, 114301 (2013)",
    )


def _broucke(
    name: str, xs: Sequence[float], vys: Sequence[float], period: float
) -> ThreeBodyPreset:
    """Broucke start: bodies on the x-axis, velocities along y."""
    return ThreeBodyPreset(
        name=name,
        masses=(1.0, 1.0, 1.0),
        positions=tuple((x, 0.0) for x in xs),  # type: ignore[arg-type]
        velocities=tuple((0.0, vy) for vy in vys),  # type: ignore[arg-type]
        period=period,
        description=f"Broucke {name[-2:].upper()} periodic orbit, equal masses (measured period).",
        reference="Broucke, Astron. Astrophys. 73, 303 (1979)",
    )


_LAGRANGE_SPEED = 3.0**-0.25  # |v| = ωR with ω² = G M / a³, a = √3 R, G = m = R = 1
_LAGRANGE_ANGLES = (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)  # 90°, 210°, 330°

PRESETS: dict[str, ThreeBodyPreset] = {
    p.name: p
    for p in (
        ThreeBodyPreset(
            name="figure-eight",
            masses=(1.0, 1.0, 1.0),
            positions=((0.97000436, -0.24308753), (-0.97000436, 0.24308753), (0.0, 0.0)),
            velocities=(
                (0.466203685, 0.43236573),
                (0.466203685, 0.43236573),
                (-0.93240737, -0.86473146),
            ),
            period=6.325914012016,
            description="Figure-eight choreography; energy -1.2871419917663258, zero L.",
            reference="Chenciner & Montgomery, Ann. Math. 152, 881 (2000); initial values by Simó",
        ),
        ThreeBodyPreset(
            name="pythagorean",
            masses=(3.0, 4.0, 5.0),
            positions=((1.0, 3.0), (-2.0, -1.0), (1.0, -1.0)),
            velocities=((0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
            period=None,
            description="Burrau's problem: masses 3, 4, 5 at rest; chaotic, E0 = -769/60.",
            reference="Szebehely & Peters, Astron. J. 72, 876 (1967)",
        ),
        ThreeBodyPreset(
            name="lagrange",
            masses=(1.0, 1.0, 1.0),
            positions=tuple((math.cos(a), math.sin(a)) for a in _LAGRANGE_ANGLES),  # type: ignore[arg-type]
            velocities=tuple(  # type: ignore[arg-type]
                (-_LAGRANGE_SPEED * math.sin(a), _LAGRANGE_SPEED * math.cos(a))
                for a in _LAGRANGE_ANGLES
            ),
            period=2 * math.pi * 3.0**0.25,
            description="Lagrange equilateral rigid rotation, R = 1 (exact, but unstable).",
            reference="Lagrange, Essai sur le problème des trois corps (1772)",
        ),
        _broucke(
            "broucke-a1",
            (-0.9892620043, 2.2096177241, -1.2203557197),
            (1.9169244185, 0.1910268738, -2.1079512924),
            6.283185276,
        ),
        _broucke(
            "broucke-a2",
            (0.3361300950, 0.7699893804, -1.1061194753),
            (1.5324315370, -0.6287350978, -0.9036964391),
            7.702164289,
        ),
        _collinear("butterfly", 0.306892758965492, 0.125506782829762, 6.234670431, "Butterfly I"),
        _collinear("moth", 0.464445237398184, 0.396059973403921, 14.894306456, "Moth I"),
        _collinear("yin-yang", 0.513938054919243, 0.304736003875733, 17.328810207, "Yin-yang Ia"),
        _collinear("goggles", 0.0833000564575194, 0.127889282226563, 10.464849621, "Goggles"),
    )
}

VALID_PRESETS: tuple[str, ...] = (*PRESETS, "random")


def _check_dim(dim: int) -> None:
    if dim not in (2, 3):
        raise InvalidInputError(f"dim must be 2 or 3; got {dim!r}.")


def _bound_state(
    rng: np.random.Generator, masses: np.ndarray, dim: int, virial_ratio: float
) -> np.ndarray:
    """Random positions in the unit ball (pairs >= 0.1 apart), Gaussian velocities scaled to
    ``T / |U| = virial_ratio``; centre of mass at the origin at rest. Returns ``(2, N, dim)``."""
    n = masses.size
    for _ in range(1000):
        q = rng.normal(size=(n, dim))
        q *= rng.uniform(size=(n, 1)) ** (1 / dim) / np.linalg.norm(q, axis=1, keepdims=True)
        dist = np.linalg.norm(q[:, None] - q[None], axis=-1) + np.eye(n)
        if dist.min() >= 0.1:
            break
    v = rng.normal(size=(n, dim))
    q -= masses @ q / masses.sum()
    v -= masses @ v / masses.sum()
    dist = np.linalg.norm(q[:, None] - q[None], axis=-1) + np.eye(n)
    potential = -0.5 * np.sum(np.outer(masses, masses) * (1 - np.eye(n)) / dist)
    kinetic = 0.5 * np.sum(masses * (v**2).sum(-1))
    v *= math.sqrt(virial_ratio * -potential / kinetic)
    return np.stack([q, v])


def random_nbody(
    n_bodies: int,
    dim: int = 2,
    seed: int = 0,
    masses: Sequence[float] | None = None,
    virial_ratio: float = 0.5,
) -> tuple[NBody, Tensor]:
    """A random bound ``N``-body start (``G = 1``), reproducible from ``seed``.

    Positions are uniform in the unit ball (no pair closer than 0.1), velocities Gaussian and
    rescaled so that kinetic / |potential| energy = ``virial_ratio`` (0.5: virial equilibrium);
    any ratio below 1 gives total energy ``< 0``. Centre of mass at the origin, zero momentum.

    Returns:
        ``(system, y0)`` with ``y0`` of shape ``(2 * n_bodies * dim,)``, float64, CPU.
    """
    _check_dim(dim)
    if n_bodies < 2:
        raise InvalidInputError(f"n_bodies must be >= 2 for a bound system; got {n_bodies!r}.")
    if not 0.0 < virial_ratio < 1.0:
        raise InvalidInputError(f"virial_ratio must be in (0, 1); got {virial_ratio!r}.")
    m = np.ones(n_bodies) if masses is None else np.asarray(masses, dtype=np.float64)
    if m.shape != (n_bodies,):
        raise InvalidInputError(f"masses must have {n_bodies} entries; got shape {m.shape}.")
    if not np.all(m > 0):
        raise InvalidInputError(f"masses must be positive; got {m.tolist()}.")
    q, v = _bound_state(np.random.default_rng(seed), m, dim, virial_ratio)
    y0 = torch.as_tensor(np.concatenate([q.ravel(), v.ravel()]), dtype=torch.float64)
    return NBody(m, dim=dim, default_state=y0), y0


def get_preset(name: str, seed: int = 0) -> ThreeBodyPreset:
    """The preset called ``name``; ``"random"`` builds a bound equal-mass start from ``seed``."""
    if name == "random":
        q, v = _bound_state(np.random.default_rng(seed), np.ones(3), 2, 0.5)
        return ThreeBodyPreset(
            name="random",
            masses=(1.0, 1.0, 1.0),
            positions=tuple(map(tuple, q.tolist())),  # type: ignore[arg-type]
            velocities=tuple(map(tuple, v.tolist())),  # type: ignore[arg-type]
            period=None,
            description=f"Random bound equal-mass start (seed {seed}, virial ratio 0.5).",
            reference="physnode.systems.presets.random_nbody",
        )
    if name not in PRESETS:
        raise InvalidInputError(
            f"unknown three-body preset {name!r}; valid presets are {list(VALID_PRESETS)}."
        )
    return PRESETS[name]


def _preset_state(preset: ThreeBodyPreset, dim: int) -> Tensor:
    q = torch.tensor(preset.positions, dtype=torch.float64)
    v = torch.tensor(preset.velocities, dtype=torch.float64)
    if dim == 3:
        q, v = (torch.nn.functional.pad(x, (0, 1)) for x in (q, v))
    return torch.cat([q.flatten(), v.flatten()])


def three_body(
    preset: str = "figure-eight", dim: int = 2, seed: int = 0
) -> tuple[NBody, Tensor, float | None]:
    """A three-body system and its start from a named preset (``G = 1``).

    Args:
        preset: one of :data:`VALID_PRESETS` (``"random"`` uses ``seed``).
        dim: 2, or 3 to embed the planar orbit in the ``z = 0`` plane.
        seed: seed of the ``"random"`` preset (ignored otherwise).

    Returns:
        ``(system, y0, period)``: ``y0`` of shape ``(6 * dim,)``, float64; ``period`` in time
        units, or ``None`` for non-periodic presets.
    """
    _check_dim(dim)
    p = get_preset(preset, seed)
    y0 = _preset_state(p, dim)
    names = ["1", "2", "3"]
    return NBody(p.masses, dim=dim, names=names, default_state=y0), y0, p.period


def random_three_body_batch(
    batch: int,
    seed: int = 0,
    dim: int = 2,
    mode: str = "figure-eight",
    perturbation: float = 1e-2,
) -> tuple[NBody, Tensor]:
    """An ensemble of ``batch`` equal-mass three-body starts, reproducible from ``seed``.

    ``mode="figure-eight"``: the figure-eight start with every coordinate perturbed by Gaussian
    noise of standard deviation ``perturbation``, then moved to the centre-of-mass frame (energy
    stays close to -1.287, so the starts are bound for small perturbations).
    ``mode="random"``: independent random bound starts as in :func:`random_nbody`.

    Returns:
        ``(system, y0)`` with ``y0`` of shape ``(batch, 6 * dim)``, float64; one unit-mass
        :class:`NBody` serves the whole batch.
    """
    _check_dim(dim)
    if batch < 1:
        raise InvalidInputError(f"batch must be >= 1; got {batch!r}.")
    rng = np.random.default_rng(seed)
    masses = np.ones(3)
    if mode == "figure-eight":
        if not perturbation >= 0:
            raise InvalidInputError(f"perturbation must be >= 0; got {perturbation!r}.")
        base = _preset_state(PRESETS["figure-eight"], 2).numpy().reshape(2, 3, 2)
        states = base + perturbation * rng.normal(size=(batch, 2, 3, 2))
        states -= states.mean(axis=2, keepdims=True)  # equal masses: COM = mean
    elif mode == "random":
        states = np.stack([_bound_state(rng, masses, 2, 0.5) for _ in range(batch)])
    else:
        raise InvalidInputError(
            f"unknown mode {mode!r}; valid modes are ['figure-eight', 'random']."
        )
    if dim == 3:
        states = np.pad(states, [(0, 0)] * 3 + [(0, 1)])
    y0 = torch.as_tensor(states.reshape(batch, -1), dtype=torch.float64)
    return NBody(masses, dim=dim), y0


# ------------------------------------------------------------------------------ registry
def _three_body_setup(info: SystemInfo, options: RunOptions, params: dict[str, float]) -> RunSetup:
    """``simulate("three-body")``: the preset's start, or a ``batch`` of perturbed
    figure-eight starts."""
    info.check_settable(params)
    if options.batch is not None:
        base, y0 = random_three_body_batch(int(options.batch), seed=options.seed, dim=options.dim)
        period, preset = get_preset("figure-eight").period, "figure-eight-perturbed"
    else:
        base, y0, period = three_body(options.preset, dim=options.dim, seed=options.seed)
        preset = options.preset
    t_end = 70.0 if preset == "pythagorean" else 10.0  # Burrau's problem needs the longer run
    return nbody_run_setup(
        info, options, base, y0, params, period=period, preset=preset, default_t_end=t_end
    )


@register_system(
    "three-body",
    description="Three bodies from a named preset (figure-eight, pythagorean, lagrange, ...).",
    settable=("G", "softening"),
    options=("preset", "dim", "seed", "batch", "masses"),
    particles=True,
    setup=_three_body_setup,
)
def _three_body_system(preset: str = "figure-eight", dim: int = 2, seed: int = 0) -> NBody:
    """The :class:`NBody` of a three-body preset; its ``default_y0()`` is the preset's start."""
    return three_body(preset, dim=dim, seed=seed)[0]
