"""The gravitational N-body problem (the Kepler problem is in :mod:`physnode.systems.kepler`).

Units: any consistent set in which the gravitational constant is ``G`` (default 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from physnode.errors import InvalidInputError
from physnode.solver.vector_field import closed_form_applies, solve_scope
from physnode.systems.base import System
from physnode.systems.registry import (
    RunOptions,
    RunSetup,
    SystemInfo,
    make_system,
    register_system,
)

if TYPE_CHECKING:
    from physnode.data import InitialConditions, Trajectory

__all__ = ["NBody", "initial_run_setup", "nbody_run_setup"]

#: the methods ``NBody.forward`` runs through: a subclass that overrides any of them has
#: another force, for which the closed-form ``jacobians`` would be wrong
_FORCE_METHODS = ("forward", "_acceleration", "_pairs", "_couplings", "_coupling_values")

_AXES = ("x", "y", "z")


def _nbody_setup(info: SystemInfo, options: RunOptions, params: dict[str, float]) -> RunSetup:
    """``simulate("n-body")``: a random bound start of ``options.bodies`` unit masses, or the
    bodies of ``options.initial``."""
    info.check_settable(params)
    if options.initial is not None:
        return initial_run_setup(info, options, params)
    from physnode.systems.presets import random_nbody  # presets imports this module

    base, y0 = random_nbody(int(options.bodies), dim=options.dim, seed=options.seed)
    return nbody_run_setup(info, options, base, y0, params, n_bodies=int(options.bodies))


@register_system(
    "n-body",
    description="Newtonian gravity between N point masses (2-D or 3-D, optional softening).",
    hidden=("default_state",),
    settable=("G", "softening"),
    options=("bodies", "dim", "seed", "masses"),
    setup=_nbody_setup,
)
class NBody(System):
    """Newtonian gravity between ``N`` point masses in 2-D or 3-D.

    State ``y``: shape ``(..., 2 * N * dim)``, positions then velocities, each body-major
    (``x1, y1, x2, y2, ..., vx1, vy1, ...``), in units where the gravitational constant is ``G``.
    Pairs interact through the Plummer-softened potential ``-G m_i m_j / sqrt(r² + softening²)``.

    Args:
        masses: ``N`` positive masses (default three unit masses).
        G: gravitational constant (positive).
        softening: Plummer softening length (>= 0; 0 is exact Newtonian gravity).
        dim: 2 or 3.
        names: optional body names used in ``state_names`` (default ``"1"``, ``"2"``, ...).
        default_state: optional state of shape ``(2 * N * dim,)`` returned by
            :meth:`default_y0`; without it a regular-polygon rigid rotation is used.
    """

    second_order = True
    autonomous = True
    positive_parameters = ("masses", "G")
    particles = True

    def __init__(
        self,
        masses: Sequence[float] | Tensor = (1.0, 1.0, 1.0),
        G: float = 1.0,
        softening: float = 0.0,
        dim: int = 2,
        names: Sequence[str] | None = None,
        default_state: Tensor | None = None,
    ) -> None:
        super().__init__()
        masses = torch.as_tensor(masses, dtype=torch.float64)
        if masses.ndim != 1 or masses.numel() < 1:
            raise InvalidInputError(
                f"masses must be a 1-D sequence of at least one mass; got shape "
                f"{tuple(masses.shape)}."
            )
        if dim not in (2, 3):
            raise InvalidInputError(f"dim must be 2 or 3; got {dim!r}.")
        if not math.isfinite(softening) or softening < 0:
            raise InvalidInputError(f"softening must be >= 0; got {softening!r}.")
        self.n_bodies = int(masses.numel())
        self.dim = dim
        names = [str(i + 1) for i in range(self.n_bodies)] if names is None else list(names)
        if len(names) != self.n_bodies:
            raise InvalidInputError(
                f"names must have one entry per body ({self.n_bodies}); got {len(names)}."
            )
        self.body_names = names
        self.add_parameter("masses", masses)
        self.add_parameter("G", G)
        self.add_parameter("softening", softening)
        self.state_names = [f"{a}_{n}" for n in names for a in _AXES[:dim]] + [
            f"v{a}_{n}" for n in names for a in _AXES[:dim]
        ]
        if default_state is not None:
            default_state = torch.as_tensor(default_state, dtype=torch.float64)
            if default_state.shape != (self.dimension,):
                raise InvalidInputError(
                    f"default_state must have shape ({self.dimension},); got "
                    f"{tuple(default_state.shape)}."
                )
        self.register_buffer("_default_state", default_state, persistent=False)

    # -- layout helpers ---------------------------------------------------------------------
    def unpack(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Split ``y`` ``(..., 2 N dim)`` into positions and velocities, each ``(..., N, dim)``."""
        q, v = y.chunk(2, dim=-1)
        shape = (*y.shape[:-1], self.n_bodies, self.dim)
        return q.reshape(shape), v.reshape(shape)

    def pack(self, q: Tensor, v: Tensor) -> Tensor:
        """Inverse of :meth:`unpack`: ``(..., N, dim)`` twice into ``(..., 2 N dim)``."""
        return torch.cat([q.flatten(-2), v.flatten(-2)], dim=-1)

    @property
    def masses(self) -> Tensor:
        """Masses, shape ``(N,)``."""
        return self.param("masses")

    @property
    def G(self) -> Tensor:
        """Gravitational constant, 0-dim."""
        return self.param("G")

    @property
    def softening(self) -> Tensor:
        """Plummer softening length, 0-dim."""
        return self.param("softening")

    @property
    def separable(self) -> bool:
        return True

    # -- dynamics ---------------------------------------------------------------------------
    def _eye(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``I_N`` and ``1 - I_N`` in ``like``'s dtype and device, cached (the evaluation loop
        is hot)."""
        key = (like.dtype, like.device)
        cache = self.__dict__.setdefault("_eye_cache", {})
        if key not in cache:
            eye = torch.eye(self.n_bodies, dtype=like.dtype, device=like.device)
            cache[key] = (eye, 1.0 - eye)
        return cache[key]

    def _pairs(self, q: Tensor, diagonal: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Separations ``q_j - q_i`` ``(..., N, N, dim)`` and softened squared distances
        ``(..., N, N)`` with ``1 + softening²`` on the diagonal (its separations are 0, so it
        adds nothing); ``diagonal`` is that ``(N, N)`` term when the caller already has it."""
        diff = q.unsqueeze(-3) - q.unsqueeze(-2)
        if diagonal is None:
            diagonal = self._couplings(q)[0]
        return diff, diff.square().sum(-1).add_(diagonal)

    def _couplings(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(I_N + softening², (1 - I_N) G m_j)``, each ``(N, N)`` in ``like``'s dtype and
        device: what the force adds to the squared distances and multiplies ``r_ij^-3`` by.

        With every parameter frozen they are cached, keyed by the values' identity and
        version (a changed value is seen). With a learnable one they are recomputed inside
        the graph while autograd records, and otherwise cached for the current solve only
        (:func:`~physnode.solver.vector_field.solve_scope`: parameters cannot change during
        a solve, but may between solves in ways no version counter records).
        """
        cached = self.__dict__.get("_coupling_cache")
        if cached is not None:  # the hot path: each value still the same tensor (not one a
            # traced functional_call put in its place), a frozen one at the same version
            (dtype, device, scope), refs, values = cached
            if dtype == like.dtype and device == like.device:
                if all(d.get(k) is v and (n is None or v._version == n) for d, k, v, n in refs):
                    if scope is None or (scope is solve_scope() and not torch.is_grad_enabled()):
                        return values
        params = [self.params[name] for name in ("softening", "G", "masses")]
        scope = None
        if any(p.learnable for p in params):
            scope = None if torch.is_grad_enabled() else solve_scope()
            if scope is None:  # in the graph, or outside any solve: computed afresh
                return self._coupling_values(like)
        refs = [
            (p._parameters, "raw", p.raw, None) if p.learnable
            else (p._buffers, "value", p.value, p.value._version)
            for p in params
        ]  # fmt: skip
        values = self._coupling_values(like)
        self.__dict__["_coupling_cache"] = ((like.dtype, like.device, scope), refs, values)
        return values

    def _coupling_values(self, like: Tensor) -> tuple[Tensor, Tensor]:
        eye, off = self._eye(like)
        diagonal = eye + self.param("softening", like) ** 2
        return diagonal, off * (self.param("G", like) * self.param("masses", like))

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """Gravitational acceleration, shape ``(..., N * dim)`` like the flat positions ``q``."""
        del t, v  # autonomous, velocity-independent
        return self._acceleration(q)

    def _acceleration(self, q: Tensor) -> Tensor:
        # a_i = Σ_j G m_j (q_j - q_i) / r_ij³, summed from the separations with the diagonal
        # weight exactly 0, never as (w q)_i - (Σ_j w_ij) q_i, which cancels to the rounding of
        # |q_i| / |q_j - q_i| (1e-7 of the acceleration for data ×1000 with G ×1e9: sensitivity
        # solves then crawl). The diagonal's r² is 1 + softening² so its power stays finite.
        # Written in the fewest tensor operations: the right-hand side is the solver's hot loop.
        diagonal, coupling = self._couplings(q)
        diff, r2 = self._pairs(q.unflatten(-1, (self.n_bodies, self.dim)), diagonal)
        w = r2.pow_(-1.5).mul_(coupling)
        return (w.unsqueeze(-1) * diff).sum(-2).flatten(-2)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``dy/dt = (v, a(q))``, shape ``y.shape``."""
        q, v = y.chunk(2, dim=-1)
        return torch.cat([v, self._acceleration(q)], dim=-1)

    def jacobians(
        self, t: Tensor, y: Tensor, params: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor]] | None:
        """``f(t, y)``, ``∂f/∂y`` ``(n, n)`` and ``∂f/∂p`` ``(n, p.numel())`` for each tensor
        ``p`` of ``params`` in closed form (the optional hook of
        :class:`~physnode.solver.vector_field.VectorField`, read by ``grad="forward"``), for a
        single state ``y`` ``(n,)`` and ``params`` among the raw ``nn.Parameter`` s of the
        learnable masses, ``G`` and softening. ``None`` otherwise (a batched state, another
        tensor or parameter, a subclass that changes the force): autograd's rows are used
        then.

        With ``r_ij = q_j - q_i``, ``s_ij = r_ij² + softening²`` and ``c_ij = G m_j`` (0 on the
        diagonal): ``∂a_i/∂q_j = c_ij (I s^-3/2 - 3 r rᵀ s^-5/2)_ij`` for ``j ≠ i`` and minus
        their sum for ``j = i``; ``∂a_i/∂m_j = G r_ij s_ij^-3/2``; ``∂a/∂G = a / G``;
        ``∂a_i/∂softening = -3 softening Σ_j c_ij r_ij s_ij^-5/2``; a positive parameter's
        column times softplus' slope at its raw value.
        """
        if y.ndim != 1 or not closed_form_applies(self, NBody, _FORCE_METHODS):
            return None
        names = self.names_of(params)
        if names is None or not set(names) <= {"masses", "G", "softening"}:
            return None  # another tensor, or a parameter added to the force's (terms')
        with torch.no_grad():
            return self._jacobians(y, names)

    def _jacobians(self, y: Tensor, names: list[str]) -> tuple[Tensor, Tensor, list[Tensor]]:
        nd = self.n_bodies * self.dim
        diagonal, coupling = self._couplings(y)
        diff, s2 = self._pairs(y[:nd].view(self.n_bodies, self.dim), diagonal)
        inv3 = s2.pow(-1.5)  # s^-3/2, (N, N)
        w = inv3 * coupling
        k = 3.0 * w / s2  # 3 c_ij s^-5/2
        accel = (w.unsqueeze(-1) * diff).sum(-2)  # (N, dim)
        # block (i, j) = ∂a_i/∂q_j = w_ij I - k_ij r rᵀ; the diagonal one is minus its row's sum
        outer = diff.unsqueeze(-1) * diff.unsqueeze(-2)
        block = w[..., None, None] * torch.eye(self.dim, dtype=y.dtype, device=y.device)
        block = block - k[..., None, None] * outer
        block = block - self._eye(y)[0][..., None, None] * block.sum(1, keepdim=True)
        jac = torch.zeros(2 * nd, 2 * nd, dtype=y.dtype, device=y.device)
        jac[:nd, nd:] = torch.eye(nd, dtype=y.dtype, device=y.device)
        jac[nd:, :nd] = block.permute(0, 2, 1, 3).reshape(nd, nd)
        rows = []
        for name in names:
            if name == "masses":  # (i, j, a): G r_ij s^-3/2 off the diagonal
                col = (self._eye(y)[1] * inv3 * self.param("G", y)).unsqueeze(-1) * diff
            elif name == "G":  # (i, 1, a)
                col = (accel / self.param("G", y)).unsqueeze(1)
            else:  # softening (i, 1, a): -softening Σ_j k_ij r_ij
                col = (-self.param("softening", y) * (k.unsqueeze(-1) * diff).sum(-2)).unsqueeze(1)
            col = col.permute(0, 2, 1).reshape(nd, -1) * self.params[name].slope(y)
            rows.append(torch.cat([torch.zeros_like(col), col]))
        return torch.cat([y[nd:], accel.reshape(-1)]), jac, rows

    # -- physical quantities ----------------------------------------------------------------
    def kinetic_energy(self, y: Tensor) -> Tensor:
        """``Σ m v² / 2``, shape ``y.shape[:-1]``."""
        _, v = self.unpack(y)
        return 0.5 * (self.param("masses", y) * (v * v).sum(-1)).sum(-1)

    def potential_energy(self, y: Tensor) -> Tensor:
        """``-G Σ_{i<j} m_i m_j / sqrt(r_ij² + softening²)``, shape ``y.shape[:-1]``."""
        q, _ = self.unpack(y)
        _, r2 = self._pairs(q)
        m = self.param("masses", y)
        pair = m.unsqueeze(-1) * m * self._eye(y)[1] * r2.rsqrt()
        return -0.5 * self.param("G", y) * pair.sum((-1, -2))

    def energy(self, y: Tensor) -> Tensor:
        """Total energy, shape ``y.shape[:-1]``."""
        return self.kinetic_energy(y) + self.potential_energy(y)

    def linear_momentum(self, y: Tensor) -> Tensor:
        """``Σ m v``, shape ``(..., dim)``."""
        _, v = self.unpack(y)
        return (self.param("masses", y).unsqueeze(-1) * v).sum(-2)

    def angular_momentum(self, y: Tensor) -> Tensor:
        """``Σ m q × v`` about the origin: shape ``y.shape[:-1]`` in 2-D, ``(..., 3)`` in 3-D."""
        q, v = self.unpack(y)
        m = self.param("masses", y)
        if self.dim == 2:
            return (m * (q[..., 0] * v[..., 1] - q[..., 1] * v[..., 0])).sum(-1)
        return (m.unsqueeze(-1) * torch.linalg.cross(q, v, dim=-1)).sum(-2)

    def center_of_mass(self, y: Tensor) -> Tensor:
        """Centre-of-mass position, shape ``(..., dim)``."""
        q, _ = self.unpack(y)
        m = self.param("masses", y)
        return (m.unsqueeze(-1) * q).sum(-2) / m.sum()

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """Energy, momentum components and angular momentum (components in 3-D)."""
        out = {"energy": self.energy(y)}
        momentum = self.linear_momentum(y)
        for i, axis in enumerate(_AXES[: self.dim]):
            out[f"momentum_{axis}"] = momentum[..., i]
        ang = self.angular_momentum(y)
        if self.dim == 2:
            out["angular_momentum"] = ang
        else:
            for i, axis in enumerate(_AXES):
                out[f"angular_momentum_{axis}"] = ang[..., i]
        return out

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The ``default_state`` given at construction, else a regular ``N``-gon of radius 1
        rotating rigidly (an exact solution for equal masses), moved to the centre-of-mass frame.
        """
        ref = self._reference()
        if self._default_state is not None:
            return self._default_state.to(dtype=dtype, device=ref.device).clone()
        n = self.n_bodies
        angle = math.pi / 2 + 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
        q = torch.zeros(n, self.dim, dtype=torch.float64)
        v = torch.zeros(n, self.dim, dtype=torch.float64)
        q[:, 0], q[:, 1] = torch.cos(angle), torch.sin(angle)
        m = self.masses.detach().cpu().to(torch.float64)
        if n > 1:
            # Equal masses m̄: ω² = G m̄ Σ_k 1 / (4 sin(π k / n)) for R = 1.
            s = sum(1.0 / (4.0 * math.sin(math.pi * k / n)) for k in range(1, n))
            omega = torch.sqrt(self.G.detach().cpu() * m.mean() * s)
            v[:, 0], v[:, 1] = -omega * torch.sin(angle), omega * torch.cos(angle)
        q = q - (m[:, None] * q).sum(0) / m.sum()
        v = v - (m[:, None] * v).sum(0) / m.sum()
        return self.pack(q, v).to(dtype=dtype, device=ref.device)

    # -- data -------------------------------------------------------------------------------
    def run_parameters(self) -> dict[str, Any]:
        """``G``, ``softening`` and ``dim`` (the masses are stored with the trajectory)."""
        return {"G": float(self.G), "softening": float(self.softening), "dim": int(self.dim)}

    def to_trajectory(
        self,
        times: np.ndarray,
        ys: np.ndarray,
        *,
        energy: np.ndarray | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Trajectory:
        """A particle trajectory: ``ys`` ``(T, 2 N dim)`` (or ``(T, B, 2 N dim)``) split into
        positions and velocities ``(T, N, dim)``, with this system's masses and body names."""
        from physnode.data import Trajectory  # physnode.systems does not need h5py

        return Trajectory.from_state(
            times,
            ys,
            self.n_bodies,
            self.dim,
            masses=self.masses.detach().cpu().numpy(),
            energy=energy,
            body_names=self.body_names,
            parameters=parameters,
        )


def _run_masses(start: np.ndarray, given: tuple[float, ...] | None) -> np.ndarray:
    """The start's masses, or ``given`` (one positive mass per body) in their place."""
    if given is None:
        return start
    masses = np.asarray(given, dtype=np.float64)
    if masses.shape != start.shape:
        raise InvalidInputError(
            f"masses: got {masses.size} value(s) for {start.size} bodies; give one per body"
        )
    if not (np.isfinite(masses).all() and (masses > 0).all()):
        raise InvalidInputError(f"masses must be finite and positive; got {list(given)}")
    return masses


def nbody_run_setup(
    info: SystemInfo,
    options: RunOptions,
    base: NBody,
    y0: Tensor,
    params: Mapping[str, float],
    *,
    period: float | None = None,
    preset: str | None = None,
    n_bodies: int | None = None,
    default_t_end: float = 10.0,
) -> RunSetup:
    """The :class:`RunSetup` of a particle system started from ``base`` and ``y0``.

    With ``options.initial`` the start is the initial condition's instead
    (:func:`initial_run_setup`); it must have ``base``'s body count, which a system that
    builds its start and then calls this function fixes (three-body: 3).

    ``base`` is rebuilt through ``make_system("n-body", ...)`` with ``params`` (``G``,
    ``softening``), which validates them with readable messages. The recorded parameters are
    ``system``, ``G``, ``softening``, ``dim``, then ``preset``, ``n_bodies`` and ``batch`` when
    given.
    """
    if options.initial is not None:
        return initial_run_setup(info, options, params, n_bodies=base.n_bodies)
    masses = _run_masses(base.masses.detach().cpu().numpy(), options.masses)
    system = make_system(
        "n-body", masses=tuple(masses.tolist()), dim=options.dim, names=base.body_names, **params
    )
    meta: dict[str, Any] = {"system": info.name, **system.run_parameters()}
    if preset is not None:
        meta["preset"] = preset
    if n_bodies is not None:
        meta["n_bodies"] = int(n_bodies)
    if options.batch is not None:
        meta["batch"] = int(options.batch)
    return RunSetup(system, y0, period, meta, default_t_end)


def initial_run_setup(
    info: SystemInfo,
    options: RunOptions,
    params: Mapping[str, float],
    *,
    n_bodies: int | None = None,
) -> RunSetup:
    """The :class:`RunSetup` of a particle system started from ``options.initial``.

    Its positions and velocities ``(N, dim)`` are the start, its ``dim`` the run's, its ``t0``
    the start time; no period (the default run length is 10 time units). Masses: the
    initial condition's, else ``options.masses``, else unit masses (both given: refused).
    ``n_bodies``: the body count the system requires (None: any ``N >= 1``, recorded as
    ``n_bodies``). The recorded parameters end with the initial condition's provenance.

    Raises:
        InvalidInputError: the wrong body count, ambiguous or bad masses, bad ``params``.
    """
    initial = options.initial
    if initial is None:
        raise InvalidInputError("initial_run_setup needs options.initial; got None.")
    if n_bodies is not None and initial.n_bodies != n_bodies:
        raise InvalidInputError(
            f"{initial.source}: {info.name} needs exactly {n_bodies} bodies; it holds "
            f"{initial.n_bodies}. Use the n-body system for any number of bodies."
        )
    masses = _initial_masses(initial, options.masses)
    system = make_system("n-body", masses=tuple(masses.tolist()), dim=initial.dim, **params)
    meta: dict[str, Any] = {"system": info.name, **system.run_parameters()}
    if n_bodies is None:
        meta["n_bodies"] = initial.n_bodies
    meta.update(initial.provenance())
    y0 = torch.as_tensor(initial.state(), dtype=torch.float64)
    return RunSetup(system, y0, None, meta, t0=initial.t0)


def _initial_masses(initial: InitialConditions, given: tuple[float, ...] | None) -> np.ndarray:
    """The initial condition's masses, else ``given``, else ones; InvalidInputError for both."""
    if initial.masses is not None and given is not None:
        raise InvalidInputError(
            f"{initial.source} gives masses {initial.masses.tolist()} and masses "
            f"{list(given)} were given too; keep one (remove the masses from the file, or "
            "the masses option)"
        )
    if initial.masses is not None:
        return np.array(initial.masses, dtype=np.float64)
    return _run_masses(np.ones(initial.n_bodies), given)
