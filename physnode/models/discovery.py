"""The discovered law: a learned correction, read out as a sparse sum of named terms.

After a hybrid fit, the correction is sampled along the fitted trajectory and regressed onto a
library of candidate terms by sequentially thresholded least squares (STLSQ, the idea of SINDy:
Brunton, Proctor & Kutz 2016). The result is a short formula with one coefficient per term and
the fraction of the correction it explains.

Particle systems (``N`` bodies in ``D`` dimensions, correction = extra accelerations): each term
is a vector field evaluated for every body, and term ``k`` contributes ``coefficient_k × term_k``
to the acceleration of each body (one coefficient for all bodies and axes). Per-body terms are
written in the body's own position ``q`` and velocity ``v`` (data coordinates, origin at the
data's origin); pair terms in ``r_ij = q_j - q_i`` and the masses ``m_j``:

    uniform    e_x, e_y[, e_z]               a uniform field
    position   q, |q| q, |q|^2 q, q/|q|^3    central fields about the origin (harmonic, ...,
                                             point mass)
    velocity   v, |v| v, |v|^2 v             drags
    pair       sum_j m_j r_ij/|r_ij|^n       pair forces ~ r^(1-n), n = 0, 2, 4, 5 (not 3:
                                             Newton's own term is a change of the masses)

The library offered is the families the correction's kind can represent (a per-body field:
uniform, position, velocity; its conservative variant: uniform, position; pair kinds: pair;
the full-state MLP: all). Where a pair term equals a per-body term along the samples
(:data:`SYNONYMS`: ``sum_j m_j r_ij = -M q`` while the centre of mass stays at the origin), it
is read as the per-body term, so a harmonic field about the origin reads ``q`` whichever kind
learned it.

Other systems (correction = extra derivatives of some state components): one regression per
corrected component onto the monomials of the state up to degree 2 (``1``, ``x``, ``x y``,
``x^2``, ... with the state's names); ``targets`` says which component each term adds to.

The threshold is not a setting: STLSQ runs along a path of thresholds and the sparsest law
whose explained fraction is within :data:`TOLERATED_LOSS` of the whole library's is chosen.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FAMILIES",
    "PARTICLE_ORDER",
    "TOLERATED_LOSS",
    "Discovery",
    "discover_particles",
    "discover_state",
    "monomial_values",
    "particle_library",
    "polynomial_library",
    "stlsq",
]

#: the sparsest law may explain this much less of the correction's mean square than the whole
#: library does (a term that adds under 1 % is not reported as physics)
TOLERATED_LOSS = 0.01
#: the thresholds of the path: a term is dropped when its RMS contribution is below
#: ``threshold × RMS(correction)``
THRESHOLDS = np.geomspace(1e-3, 0.5, 40)
#: STLSQ's refits per threshold (it settles in a few; this only bounds a cycle)
MAX_SWEEPS = 20

#: a pair term and the per-body term it equals along data whose centre of mass stays at the
#: origin: ``Σ_j m_j r_ij = M (q_cm - q_i) = -M q_i``. A pair kind's readout names it by the
#: per-body term there (the simpler reading of the same samples: a harmonic field about the
#: origin), and keeps the pair term where the two differ.
SYNONYMS = {"sum_j m_j r_ij": "q"}
#: two columns are one term when ``1 - |cos|`` between them, along the samples, is below this
#: (a centre of mass off the origin by ~0.1 % of the positions' size)
PARALLEL = 1e-6

#: ``f(q, v, m)``: positions and velocities ``(..., N, D)``, masses ``(N,)`` → ``(..., N, D)``;
#: the library's terms also have ``jacobian(q, v, m)`` → :class:`TermJacobian` (value and
#: derivatives) at one state
ParticleTerm = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Discovery:
    """A sparse law found in a learned correction.

    Attributes:
        terms: the names of the terms kept, e.g. ``["q", "|v| v"]``.
        coefficients: one per term, float64 ``(K,)``.
        explained: the fraction of the correction's mean square the law explains
            (``1 - Σ residual² / Σ correction²`` over the samples), in ``[0, 1]``.
        library_explained: the same fraction for the least-squares fit of the whole library
            (the ceiling: below ~0.9 the library lacks what the network learned).
        formula: one readable line.
        targets: for non-particle systems, the component each term adds to (``d<name>/dt``);
            empty for particle systems (every term adds to every body's acceleration).
        relative_size: RMS of the correction over RMS of the physics' part of the same
            derivatives along the samples (NaN when not given): a law read from a correction
            of 1e-4 of the physics is the network's residue, not physics.
    """

    terms: list[str]
    coefficients: np.ndarray
    explained: float
    library_explained: float
    formula: str
    targets: list[str]
    relative_size: float = float("nan")


# -- the particle library -----------------------------------------------------------------------
# Terms are written once, in torch, for both the readout (NumPy samples go through them) and the
# symbolic refit (:class:`~physnode.models.symbolic.SymbolicTerms`), each with its Jacobian
# in closed form beside it (``jacobian``, read by forward sensitivities instead of autograd).
def _norm(x: Tensor) -> Tensor:
    return x.square().sum(-1, keepdim=True).sqrt()


@dataclass(frozen=True)
class TermJacobian:
    """A term's value and derivatives at one state (``None``: identically zero).

    Attributes:
        value: the term, ``(N, D)``, as calling it gives it (to the bit).
        q, v: ``[i, a, j, b] = ∂term_{i,a} / ∂q_{j,b}`` (resp. ``v``), ``(N, D, N, D)``.
        masses: ``[i, a, j] = ∂term_{i,a} / ∂m_j``, ``(N, D, N)``.
    """

    value: Tensor
    q: Tensor | None = None
    v: Tensor | None = None
    masses: Tensor | None = None


def _own(block: Tensor) -> Tensor:
    """Per-body blocks ``(N, D, D)`` (each body's term of its own coordinates) as the full
    ``(N, D, N, D)`` derivative."""
    eye = torch.eye(block.shape[0], dtype=block.dtype, device=block.device)
    return eye[:, None, :, None] * block[:, :, None, :]


class _Unit:
    """``e_axis``: the same unit vector on every body."""

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def __call__(self, q: Tensor, v: Tensor, m: Tensor) -> Tensor:
        del v, m
        e = torch.arange(q.shape[-1], device=q.device) == self.axis
        return e.to(q.dtype).expand_as(q)

    def jacobian(self, q: Tensor, v: Tensor, m: Tensor) -> TermJacobian:
        return TermJacobian(self(q, v, m))


class _Radial:
    """``|x|^p x`` of each body's own position (``of="q"``) or velocity (``"v"``); its
    derivative ``|x|^p I + p |x|^(p-2) x xᵀ``."""

    def __init__(self, of: str, power: int) -> None:
        self.of, self.power = of, power

    def __call__(self, q: Tensor, v: Tensor, m: Tensor) -> Tensor:
        x = q if self.of == "q" else v
        if self.power == 0:
            return x
        if self.power > 0:
            return _norm(x) ** self.power * x
        return x / _norm(x).clamp_min(1e-300) ** -self.power

    def jacobian(self, q: Tensor, v: Tensor, m: Tensor) -> TermJacobian:
        x = q if self.of == "q" else v
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        if self.power == 0:
            block = eye.expand(x.shape[0], -1, -1)
        else:
            r = _norm(x).clamp_min(1e-300).unsqueeze(-1)  # (N, 1, 1)
            outer = x.unsqueeze(-1) * x.unsqueeze(-2)
            block = r**self.power * eye + self.power * r ** (self.power - 2) * outer
        return TermJacobian(self(q, v, m), **{self.of: _own(block)})


class _Pair:
    """``Σ_j m_j r_ij / |r_ij|^n`` (``r_ij = q_j - q_i``); its derivative in ``q_j`` is
    ``m_j (|r|^-n I - n |r|^-(n+2) r rᵀ)`` for ``j ≠ i`` (minus their sum for ``j = i``), in
    ``m_j`` it is ``r_ij / |r_ij|^n``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _geometry(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        diff = q.unsqueeze(-3) - q.unsqueeze(-2)  # [i, j] = q_j - q_i
        eye = torch.eye(q.shape[-2], dtype=q.dtype, device=q.device)
        r = (diff.square().sum(-1) + eye).sqrt()  # 1 on the diagonal, where diff is 0
        return diff, eye, r

    def __call__(self, q: Tensor, v: Tensor, m: Tensor) -> Tensor:
        del v
        diff, eye, r = self._geometry(q)
        w = (1.0 - eye) * m.to(q.dtype) / r**self.n
        return (w.unsqueeze(-1) * diff).sum(-2)

    def jacobian(self, q: Tensor, v: Tensor, m: Tensor) -> TermJacobian:
        diff, eye, r = self._geometry(q)
        w = (1.0 - eye) * m.to(q.dtype) / r**self.n  # as __call__ weighs the pairs
        value = (w.unsqueeze(-1) * diff).sum(-2)
        per_mass = (1.0 - eye) / r**self.n  # (N, N)
        outer = diff.unsqueeze(-1) * diff.unsqueeze(-2)
        block = w[..., None, None] * torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
        block = block - (self.n * w / r**2)[..., None, None] * outer  # (i, j, a, b)
        block = block - eye[..., None, None] * block.sum(1, keepdim=True)
        masses = (per_mass.unsqueeze(-1) * diff).permute(0, 2, 1)  # (i, a, j)
        return TermJacobian(value, q=block.permute(0, 2, 1, 3), masses=masses)


#: the families of particle terms; a kind of correction declares the families it can represent
#: (:class:`~physnode.models.registry.CorrectionKind` ``families``)
FAMILIES = ("uniform", "position", "velocity", "pair")

#: each particle term's order: the power of ``|q|``, ``|v|`` or ``|r_ij|`` its size scales as
#: (its absolute value; the uniform terms 0), by name. Among laws the data cannot tell apart
#: the symbolic refit reads the one of lowest order (:mod:`physnode.fit.symbolic`): the
#: leading term of a smooth field's Taylor series is the lowest order
PARTICLE_ORDER = {
    **{f"e_{axis}": 0 for axis in "xyz"},
    "q": 1, "|q| q": 2, "|q|^2 q": 3, "q/|q|^3": 2,
    "v": 1, "|v| v": 2, "|v|^2 v": 3,
    "sum_j m_j r_ij": 1, **{f"sum_j m_j r_ij/|r_ij|^{n}": abs(1 - n) for n in (2, 4, 5)},
}  # fmt: skip


def particle_library(dim: int, families: Sequence[str] = FAMILIES) -> dict[str, ParticleTerm]:
    """The candidate terms for ``D = dim`` in ``families``, by name (:data:`ParticleTerm`)."""
    terms: dict[str, ParticleTerm] = {}
    if "uniform" in families:
        terms |= {f"e_{'xyz'[a]}": _Unit(a) for a in range(dim)}
    if "position" in families:
        terms |= {"q": _Radial("q", 0), "|q| q": _Radial("q", 1), "|q|^2 q": _Radial("q", 2),
                  "q/|q|^3": _Radial("q", -3)}  # fmt: skip
    if "velocity" in families:
        terms |= {"v": _Radial("v", 0), "|v| v": _Radial("v", 1), "|v|^2 v": _Radial("v", 2)}
    if "pair" in families:
        # no n = 3: a correction along Newton's own term is a change of G m_j, which the
        # physics' masses already are (the refit could not tell the two apart)
        for n in (0, 2, 4, 5):
            name = "sum_j m_j r_ij" if n == 0 else f"sum_j m_j r_ij/|r_ij|^{n}"
            terms[name] = _Pair(n)
    return terms


# -- the polynomial library ---------------------------------------------------------------------
def polynomial_library(names: Sequence[str], degree: int = 2) -> list[tuple[str, tuple[int, ...]]]:
    """Monomials of the state up to ``degree``: ``(name, exponents-as-index-tuple)``, e.g.
    ``("x y", (0, 1))``; ``("1", ())`` is the constant."""
    out: list[tuple[str, tuple[int, ...]]] = [("1", ())]
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(len(names)), d):
            out.append((_monomial_name(names, combo), combo))
    return out


def _monomial_name(names: Sequence[str], combo: tuple[int, ...]) -> str:
    parts = []
    for index, group in itertools.groupby(combo):
        power = len(list(group))
        parts.append(names[index] + (f"^{power}" if power > 1 else ""))
    return " ".join(parts)


def monomial_values(states: np.ndarray, library: list[tuple[str, tuple[int, ...]]]) -> np.ndarray:
    """``(T, D)`` states → ``(T, K)`` monomial values."""
    cols = [np.prod(states[:, list(combo)], axis=1) if combo else np.ones(len(states))
            for _, combo in library]  # fmt: skip
    return np.stack(cols, axis=1)


# -- sequentially thresholded least squares -------------------------------------------------------
def stlsq(columns: np.ndarray, target: np.ndarray, threshold: float) -> np.ndarray:
    """Sparse coefficients ``(K,)`` of ``target ≈ columns @ ξ`` (``columns`` ``(R, K)``,
    ``target`` ``(R,)``): least squares, then drop every term whose RMS contribution
    ``|ξ_k| · RMS(column_k)`` is below ``threshold · RMS(target)`` and refit the rest, until
    the kept set no longer changes."""
    scale = np.sqrt(np.mean(columns**2, axis=0))
    usable = scale > 0
    z = np.where(usable, columns / np.where(usable, scale, 1.0), 0.0)
    cut = threshold * float(np.sqrt(np.mean(target**2)))
    keep = usable.copy()
    xi = np.zeros(columns.shape[1])
    for _ in range(MAX_SWEEPS):
        xi = np.zeros(columns.shape[1])
        if keep.any():
            xi[keep] = np.linalg.lstsq(z[:, keep], target, rcond=None)[0]
        new_keep = keep & (np.abs(xi) >= cut)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    xi[~keep] = 0.0
    return np.where(usable, xi / np.where(usable, scale, 1.0), 0.0)


def _explained(columns: np.ndarray, target: np.ndarray, xi: np.ndarray) -> float:
    total = float(np.sum(target**2))
    if total == 0:
        return 1.0
    return max(0.0, 1.0 - float(np.sum((target - columns @ xi) ** 2)) / total)


def _sparsest(columns: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Along the threshold path, the sparsest coefficients whose explained fraction is within
    :data:`TOLERATED_LOSS` of the whole library's (ties: the one that explains most); with
    that fraction and the library's."""
    full = stlsq(columns, target, 0.0)
    ceiling = _explained(columns, target, full)
    best, best_key = full, (int(np.count_nonzero(full)), -ceiling)
    for threshold in THRESHOLDS:
        xi = stlsq(columns, target, float(threshold))
        score = _explained(columns, target, xi)
        key = (int(np.count_nonzero(xi)), -score)
        if score >= ceiling - TOLERATED_LOSS and key < best_key:
            best, best_key = xi, key
    return best, -best_key[1], ceiling


# -- the two entry points -----------------------------------------------------------------------
def discover_particles(
    positions: np.ndarray, velocities: np.ndarray, masses: np.ndarray, correction: np.ndarray,
    families: Sequence[str] = FAMILIES,
) -> Discovery:  # fmt: skip
    """The law of a particle correction sampled at ``T`` states.

    Args:
        positions, velocities: ``(T, N, D)`` (length, length / time).
        masses: ``(N,)``.
        correction: the extra accelerations there, ``(T, N, D)`` (length / time²).
        families: the families of terms the correction can represent (a per-body field has
            no pair terms, a pair term no per-body ones: offering them would only let
            near-collinear terms cancel each other).
    """
    q, v = np.asarray(positions, np.float64), np.asarray(velocities, np.float64)
    m = np.asarray(masses, np.float64)
    library = particle_library(q.shape[-1], families)
    qt, vt, mt = (torch.from_numpy(x) for x in (q, v, m))
    with torch.no_grad():
        columns = np.stack([f(qt, vt, mt).reshape(-1).numpy() for f in library.values()], 1)
    names = _with_synonyms(list(library), columns, qt, vt, mt)
    target = np.asarray(correction, np.float64).reshape(-1)
    xi, explained, ceiling = _sparsest(columns, target)
    kept = np.flatnonzero(xi)
    names = [names[k] for k in kept]
    formula = "a_i += " + _sum(names, xi[kept]) if len(kept) else "a_i += 0 (no term explains it)"
    return Discovery(names, xi[kept].copy(), explained, ceiling, formula, [])


def _with_synonyms(
    names: list[str], columns: np.ndarray, q: Tensor, v: Tensor, m: Tensor
) -> list[str]:
    """``names``, with each term of :data:`SYNONYMS` renamed to its per-body equal where the
    two columns are parallel along the samples (:data:`PARALLEL`); ``columns`` ``(R, K)`` is
    rewritten in place with the per-body term's values, so its coefficient is that term's."""
    per_body = particle_library(q.shape[-1], ("position", "velocity"))
    out = list(names)
    for k, name in enumerate(names):
        other = SYNONYMS.get(name)
        if other is None or other in names:
            continue
        with torch.no_grad():
            col = per_body[other](q, v, m).reshape(-1).numpy()
        norms = float(np.linalg.norm(col) * np.linalg.norm(columns[:, k]))
        if norms > 0 and 1.0 - abs(float(col @ columns[:, k])) / norms < PARALLEL:
            columns[:, k], out[k] = col, other
    return out


def discover_state(
    states: np.ndarray, names: Sequence[str], correction: np.ndarray, targets: Sequence[str]
) -> Discovery:
    """The law of a correction to some components of a general state.

    Args:
        states: ``(T, D)`` samples of the state, whose components are called ``names``.
        correction: ``(T, C)``: the extra derivative of each component in ``targets`` there.
        targets: the ``C`` corrected components' names.
    """
    states = np.asarray(states, np.float64)
    library = polynomial_library(names)
    columns = monomial_values(states, library)
    correction = np.asarray(correction, np.float64).reshape(len(states), -1)
    terms, coefficients, targets_out, pieces = [], [], [], []
    residual, total, ceiling_res = 0.0, float(np.sum(correction**2)), 0.0
    for c, target_name in enumerate(targets):
        xi, explained, ceiling = _sparsest(columns, correction[:, c])
        # the fractions back into residual sums, so the components add by their sizes
        size = float(np.sum(correction[:, c] ** 2))
        residual += (1.0 - explained) * size
        ceiling_res += (1.0 - ceiling) * size
        kept = np.flatnonzero(xi)
        terms += [library[k][0] for k in kept]
        coefficients += list(xi[kept])
        targets_out += [target_name] * len(kept)
        if len(kept):
            pieces.append(f"d{target_name}/dt += " + _sum([library[k][0] for k in kept], xi[kept]))
    explained = 1.0 if total == 0 else max(0.0, 1.0 - residual / total)
    ceiling = 1.0 if total == 0 else max(0.0, 1.0 - ceiling_res / total)
    formula = "; ".join(pieces) or "no term explains it"
    return Discovery(terms, np.asarray(coefficients, np.float64), explained, ceiling, formula,
                     targets_out)  # fmt: skip


def _sum(names: Sequence[str], coefficients: np.ndarray) -> str:
    """``-0.05 q + 0.1 |v| v``: coefficients to 4 significant digits."""
    parts = []
    for k, (name, c) in enumerate(zip(names, coefficients, strict=True)):
        magnitude = f"{abs(c):.4g}" + ("" if name == "1" else f" {name}")
        sign = ("-" if c < 0 else "") if k == 0 else ("- " if c < 0 else "+ ")
        parts.append(sign + magnitude)
    return " ".join(parts)
