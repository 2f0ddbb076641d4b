"""NBody and Kepler: physical quantities by hand, autograd consistency, learnable masses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physnode.systems import Kepler, NBody
from tests.reference import FIGURE_EIGHT_POSITIONS, FIGURE_EIGHT_VELOCITIES, acceleration

# Hand computations below involve a handful of float64 operations on O(1) numbers: a few ulps.
EXACT = 1e-14


def two_bodies() -> tuple[NBody, torch.Tensor]:
    """m = (1, 3) at (0, 0) and (2, 0) with velocities (0, 1) and (1, -1) (2-D)."""
    system = NBody([1.0, 3.0], G=2.0)
    q = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return system, system.pack(q, v)


def test_pack_unpack_layout() -> None:
    system, y = two_bodies()
    assert y.tolist() == [0.0, 0.0, 2.0, 0.0, 0.0, 1.0, 1.0, -1.0]  # body-major, q then v
    q, v = system.unpack(y.expand(5, -1))
    assert q.shape == v.shape == (5, 2, 2)
    torch.testing.assert_close(system.pack(q, v), y.expand(5, -1), rtol=0, atol=0)


def test_quantities_by_hand() -> None:
    system, y = two_bodies()
    # T = 1/2 * 1 * 1 + 1/2 * 3 * 2 = 3.5; U = -G m1 m2 / r = -2 * 3 / 2 = -3.
    assert float(system.kinetic_energy(y)) == pytest.approx(3.5, abs=EXACT)
    assert float(system.potential_energy(y)) == pytest.approx(-3.0, abs=EXACT)
    assert float(system.energy(y)) == pytest.approx(0.5, abs=EXACT)
    # P = 1 * (0, 1) + 3 * (1, -1) = (3, -2).
    assert system.linear_momentum(y).tolist() == pytest.approx([3.0, -2.0], abs=EXACT)
    # L = Σ m (x vy - y vx) = 0 + 3 * (2 * -1 - 0) = -6.
    assert float(system.angular_momentum(y)) == pytest.approx(-6.0, abs=EXACT)
    # COM = (1 * 0 + 3 * 2) / 4 = 1.5 on x.
    assert system.center_of_mass(y).tolist() == pytest.approx([1.5, 0.0], abs=EXACT)
    # a1 = G m2 / r² toward body 2 = 2 * 3 / 4 = 1.5; a2 = -G m1 / r² = -0.5.
    q, v = y.chunk(2)
    acc = system.acceleration(torch.tensor(0.0), q, v)
    assert acc.tolist() == pytest.approx([1.5, 0.0, -0.5, 0.0], abs=EXACT)


def test_three_d_angular_momentum_and_invariant_names() -> None:
    system = NBody([2.0, 1.0], dim=3)
    q = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    y = system.pack(q, v)
    # 2 * (1,0,0) × (0,1,0) + 1 * (0,1,0) × (0,0,2) = (0,0,2) + (2,0,0).
    assert system.angular_momentum(y).tolist() == pytest.approx([2.0, 0.0, 2.0], abs=EXACT)
    assert set(system.invariants(y)) == {
        "energy",
        "momentum_x",
        "momentum_y",
        "momentum_z",
        "angular_momentum_x",
        "angular_momentum_y",
        "angular_momentum_z",
    }


def test_softened_potential_by_hand() -> None:
    system = NBody([1.0, 1.0], softening=0.5)
    y = torch.tensor([0.0, 0.0, 1.2, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    # U = -1 / sqrt(1.44 + 0.25) = -1 / 1.3.
    assert float(system.energy(y)) == pytest.approx(-1 / 1.3, abs=EXACT)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("softening", [0.0, 0.2])
def test_energy_gradient_is_minus_mass_times_acceleration(dim: int, softening: float) -> None:
    masses = torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=torch.float64)
    system = NBody(masses, G=1.3, softening=softening, dim=dim)
    gen = torch.Generator().manual_seed(dim)
    y = torch.randn(3, system.dimension, dtype=torch.float64, generator=gen)
    q, v = y.chunk(2, dim=-1)
    q = q.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(system.energy(torch.cat([q, v], -1)).sum(), q)
    acc = system.acceleration(torch.tensor(0.0), q.detach(), v)
    expected = -(masses.repeat_interleave(dim) * acc)
    # Two routes through the same float64 sums (autograd vs closed form): ~1e-15 relative.
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_coincident_bodies_give_finite_gradients_with_softening() -> None:
    system = NBody([1.0, 1.0], softening=0.1)
    y = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    out = system(torch.tensor(0.0), y)
    out.sum().backward()
    assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(y.grad).all())


def test_learnable_masses_get_gradients_and_stay_positive() -> None:
    system = NBody([1.0, 2.0, 3.0]).set_learnable(["masses", "G"])
    raw = dict(system.named_parameters())
    assert set(raw) == {"params.masses.raw", "params.G.raw"}
    torch.testing.assert_close(
        system.masses, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), rtol=1e-15, atol=0
    )
    y = torch.randn(4, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss = system(torch.tensor(0.0), y).square().sum()
    loss.backward()
    assert raw["params.masses.raw"].grad is not None
    assert bool((raw["params.masses.raw"].grad != 0).all())
    # An optimiser step that would send a directly stored mass far below zero.
    optimiser = torch.optim.SGD(system.parameters(), lr=100.0)
    optimiser.zero_grad()
    system.masses.sum().backward()
    optimiser.step()
    assert bool((system.masses > 0).all()) and bool(system.G > 0)


def test_float32_state_with_float64_parameters() -> None:
    system = NBody([1.0, 2.0])
    y = system.default_y0(torch.float32)
    assert system(torch.tensor(0.0), y).dtype == torch.float32
    assert system.energy(y).dtype == torch.float32


def test_default_polygon_is_rigid_rotation() -> None:
    """The default start is a rigid rotation: on a circle of radius 1, with velocities ω ẑ × q
    where ω² R is the centripetal pull, taken here from the independent numpy gravity of
    ``tests/reference.py`` (not from the class)."""
    system = NBody([1.0] * 5, G=1.4)
    y0 = system.default_y0()
    q, v = (x.numpy() for x in system.unpack(y0))
    acc = acceleration(q, np.ones(5), 1.4)
    # A rigid rotation needs a = -ω² q on every body, one ω for all: a few ulps of O(1).
    omega2 = -(acc * q).sum(-1) / (q * q).sum(-1)
    np.testing.assert_allclose(acc, -omega2.mean() * q, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, rtol=0, atol=EXACT)
    # v = ω ẑ × q = ω (-q_y, q_x): counter-clockwise, tangential, |v| = ω R.
    tangent = np.stack([-q[:, 1], q[:, 0]], axis=-1)
    np.testing.assert_allclose(v, np.sqrt(omega2.mean()) * tangent, rtol=0, atol=1e-13)
    assert float(system.linear_momentum(y0).abs().max()) < EXACT


def test_kepler_invariants_by_hand() -> None:
    kepler = Kepler(mu=1.0, eccentricity=0.6)
    y0 = kepler.default_y0()
    inv = kepler.invariants(y0)
    # H = -1/2 (a = 1); L = sqrt(a (1 - e²)) = 0.8; Runge–Lenz = (e, 0) (points to perihelion).
    assert float(inv["energy"]) == pytest.approx(-0.5, abs=EXACT)
    assert float(inv["angular_momentum"]) == pytest.approx(0.8, abs=EXACT)
    assert float(inv["runge_lenz_x"]) == pytest.approx(0.6, abs=EXACT)
    assert float(inv["runge_lenz_y"]) == pytest.approx(0.0, abs=EXACT)
    assert float(kepler.period) == pytest.approx(2 * math.pi, abs=EXACT)


def _jacobian_by_hand(q: np.ndarray, masses: np.ndarray, G: float) -> np.ndarray:
    """``∂a_i/∂q_j = G m_j (I/r³ - 3 d dᵀ/r⁵)`` (``d = q_j - q_i``, j ≠ i) and
    ``∂a_i/∂q_i = -Σ_{j≠i} ∂a_i/∂q_j``, as ``(N·dim, N·dim)``."""
    n, dim = q.shape
    jac = np.zeros((n, dim, n, dim))
    for i in range(n):
        for j in range(n):
            if i != j:
                d = q[j] - q[i]
                r2 = d @ d
                block = G * masses[j] * (np.eye(dim) / r2**1.5 - 3 * np.outer(d, d) / r2**2.5)
                jac[i, :, j] += block
                jac[i, :, i] -= block
    return jac.reshape(n * dim, n * dim)


@pytest.mark.parametrize(("length", "offset"), [(1.0, 0.0), (1e3, 0.0), (1e-3, 0.0), (1.0, 1e4)])
def test_acceleration_and_its_jacobian_are_accurate_in_any_units(length, offset) -> None:
    """Positions in units ``length`` (G scaled by length³, so the dynamics are the same) and a
    cluster ``offset`` from the origin: the acceleration and its Jacobian (autograd, as forward
    sensitivities use it) agree with NumPy pairwise sums to 1e-13 of their largest entry, a few
    hundred ulps of sums of O(1) terms. Before the fix the (w q)_i - (Σ w) q_i form, with G m_i
    on the diagonal, missed by 1e-7 at length 1e3 and by 1e-12 at offset 1e4."""
    masses = np.array([0.8, 1.3, 1.0, 0.6])
    q = (np.random.default_rng(3).normal(size=(4, 3)) + offset) * length
    G = 1.7 * length**3
    system = NBody(masses, G=G, dim=3)
    qt = torch.tensor(q.ravel())
    acc = system.acceleration(torch.tensor(0.0), qt, torch.zeros_like(qt)).numpy()
    expected = acceleration(q, masses, G).ravel()
    np.testing.assert_allclose(acc, expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    jac = torch.autograd.functional.jacobian(
        lambda x: system.acceleration(torch.tensor(0.0), x, torch.zeros_like(x)), qt
    ).numpy()
    by_hand = _jacobian_by_hand(q, masses, G)
    np.testing.assert_allclose(jac, by_hand, rtol=0, atol=1e-13 * np.abs(by_hand).max())


def test_cached_couplings_follow_every_change_of_the_parameters() -> None:
    """The force caches ``G m_j`` and the softening while every parameter is frozen. Each way
    a value can change — in place on the buffer, a new buffer from ``load_state_dict``, made
    learnable and stepped, frozen again, another dtype — must show in the acceleration, which
    is compared with the independent NumPy pairwise sum each time."""
    rng = np.random.default_rng(5)
    q = rng.normal(size=(3, 2))
    qt = torch.tensor(q.ravel())
    system = NBody([0.8, 1.3, 1.0], G=1.5)

    def check(masses: np.ndarray, G: float, like: torch.Tensor = qt) -> None:
        acc = system.acceleration(torch.tensor(0.0), like, torch.zeros_like(like))
        expected = acceleration(q, masses, G).ravel()
        # float64: a few ulps of O(1) sums; float32: its epsilon 1.2e-7 times the same sums
        tol = 1e-13 if like.dtype == torch.float64 else 1e-5
        np.testing.assert_allclose(acc.detach().double().numpy(), expected, rtol=tol, atol=tol)

    check(np.array([0.8, 1.3, 1.0]), 1.5)
    with torch.no_grad():
        system.params["masses"].value.mul_(2.0)  # in place: the version changes
    check(np.array([1.6, 2.6, 2.0]), 1.5)
    state = {k: v.clone() for k, v in system.state_dict().items()}
    state["params.G.value"] = torch.tensor(0.5, dtype=torch.float64)
    system.load_state_dict(state)
    check(np.array([1.6, 2.6, 2.0]), 0.5)
    system.set_learnable("masses")
    with torch.no_grad():
        system.params["masses"].raw.add_(1.0)
    masses = system.masses.detach().numpy()
    check(masses, 0.5)
    system.set_learnable("masses", False)
    check(masses, 0.5)
    check(masses, 0.5, qt.float())


def _softened_acceleration(q: np.ndarray, masses: np.ndarray, G: float, eps: float) -> np.ndarray:
    """NumPy pairwise sum of the Plummer-softened force, ``a_i = Σ_j G m_j d / (d² + ε²)^1.5``."""
    a = np.zeros_like(q)
    for i in range(len(masses)):
        for j in range(len(masses)):
            if i != j:
                d = q[j] - q[i]
                a[i] += G * masses[j] * d / (d @ d + eps**2) ** 1.5
    return a


def _central(fun, x: np.ndarray, h: float) -> np.ndarray:
    """Central differences of ``fun`` (flat output) in each entry of ``x``: ``(out, x.size)``."""
    cols = []
    for k in range(x.size):
        step = np.zeros_like(x)
        step.flat[k] = h
        cols.append((fun(x + step) - fun(x - step)).ravel() / (2 * h))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize(("dim", "length", "eps"), [(2, 1.0, 0.0), (3, 1.0, 0.2), (3, 1e3, 0.0)])
def test_closed_form_jacobians_match_numpy(dim: int, length: float, eps: float) -> None:
    """``NBody.jacobians`` (what forward sensitivities read instead of autograd's rows) against
    references written apart from it: ``∂a/∂q`` by hand (``_jacobian_by_hand``, no softening)
    or by central differences of a NumPy softened force; the mass, G and softening columns by
    central differences of that force in the natural values, times softplus' slope computed in
    NumPy. Tolerances: the by-hand Jacobian to 1e-13 of its largest entry (ulps of O(1) sums,
    as above); central differences with h = 1e-5 (relative) carry h² ~ 1e-10 truncation and
    ~1e-11 rounding, so 1e-7 of the largest entry."""
    masses = np.array([0.8, 1.3, 1.0, 0.6])
    rng = np.random.default_rng(7)
    q = rng.normal(size=(4, dim)) * length
    v = rng.normal(size=(4, dim)) * length
    G = 1.7 * length**3
    system = NBody(masses, G=G, softening=eps * length, dim=dim)
    learned = ["masses", "G"] + (["softening"] if eps else [])
    system.set_learnable(learned)
    raws = [system.params[name].raw for name in learned]
    y = torch.tensor(np.concatenate([q.ravel(), v.ravel()]))
    f, jac, rows = system.jacobians(torch.tensor(0.0), y, raws)

    force = lambda q_, m_=masses, G_=G, e_=eps * length: _softened_acceleration(q_, m_, G_, e_)  # noqa: E731
    np.testing.assert_allclose(f.numpy(), np.concatenate([v.ravel(), force(q).ravel()]),
                               rtol=0, atol=1e-13 * np.abs(force(q)).max())  # fmt: skip
    nd = 4 * dim
    jac = jac.numpy()
    np.testing.assert_array_equal(jac[:nd, :nd], 0)
    np.testing.assert_array_equal(jac[:nd, nd:], np.eye(nd))
    np.testing.assert_array_equal(jac[nd:, nd:], 0)
    by_q = _jacobian_by_hand(q, masses, G) if not eps else _central(force, q, 1e-5 * length)
    tol = 1e-13 if not eps else 1e-7
    np.testing.assert_allclose(jac[nd:, :nd], by_q, rtol=0, atol=tol * np.abs(by_q).max())

    def slope(name: str) -> np.ndarray:  # d softplus(raw) / d raw = 1 / (1 + exp(-raw))
        raw = system.params[name].raw.detach().numpy().reshape(-1)
        return 1.0 / (1.0 + np.exp(-raw)) if system.params[name].positive else np.ones_like(raw)

    natural = {
        "masses": (masses, lambda m: force(q, m_=m)),
        "G": (np.array([G]), lambda g: force(q, G_=g[0])),
        "softening": (np.array([eps * length]), lambda e: force(q, e_=e[0])),
    }
    for name, got in zip(learned, rows, strict=True):
        value, fun = natural[name]
        h = 1e-5 * max(float(np.abs(value).max()), length)
        expected = _central(fun, value, h) * slope(name)
        got = got.numpy()
        np.testing.assert_array_equal(got[:nd], 0)  # d(velocity)/dt = v holds no parameter
        np.testing.assert_allclose(got[nd:], expected, rtol=0, atol=1e-7 * np.abs(expected).max())


def test_closed_form_jacobians_decline_what_they_do_not_cover() -> None:
    """``None`` (autograd's rows are used then) for a batched state, a tensor that is not one
    of the system's learnable raws or a parameter the force does not read, a subclass that
    changes the force (through any method its forward runs) and a forward hook: a closed form
    of another force would be silently wrong."""
    system = NBody([0.8, 1.3, 1.0])
    system.set_learnable("masses")
    raw = system.params["masses"].raw
    y = torch.randn(12, dtype=torch.float64)
    t = torch.tensor(0.0)
    assert system.jacobians(t, y, [raw]) is not None
    assert system.jacobians(t, y.expand(2, 12), [raw]) is None
    assert system.jacobians(t, y, [torch.ones(3, requires_grad=True)]) is None
    system.add_parameter("coefficients", torch.zeros(2), positive=False)
    system.set_learnable("coefficients")  # a parameter the force does not read (terms' own)
    assert system.jacobians(t, y, [system.params["coefficients"].raw]) is None

    class Stronger(NBody):
        def _acceleration(self, q):
            return 2 * super()._acceleration(q)

    class SquaredMasses(NBody):  # the same forward, another coupling: G m_j²
        def _coupling_values(self, like):
            diagonal, coupling = super()._coupling_values(like)
            return diagonal, coupling * self.param("masses", like)

    for cls in (Stronger, SquaredMasses):
        other = cls([0.8, 1.3, 1.0])
        other.set_learnable("masses")
        assert other.jacobians(t, y, [other.params["masses"].raw]) is None
    handle = system.register_forward_hook(lambda module, args, out: 2 * out)
    assert system.jacobians(t, y, [raw]) is None  # a hook changes what the call returns
    handle.remove()
    assert system.jacobians(t, y, [raw]) is not None


def test_learnable_couplings_are_cached_for_one_solve_only() -> None:
    """With learnable masses the couplings are cached only within one solve, without grad:
    a change through ``.data`` (which no version counter records) between two solves must
    show in the second, for ACA's no-grad forward pass too; while autograd records they stay
    in the graph. References: NumPy pairwise sums, and a fresh system with the new masses."""
    from physnode import odeint
    from physnode.solver.vector_field import one_solve

    q = np.random.default_rng(2).normal(size=(3, 2))
    y = torch.tensor(np.concatenate([q.ravel(), np.zeros(6)]))
    system = NBody([0.8, 1.3, 1.0])
    system.set_learnable("masses")

    @one_solve
    def two_evaluations() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return system._couplings(y)[1], system._couplings(y)[1]

    first, again = two_evaluations()
    assert first is again  # one solve: computed once
    system.params["masses"].raw.data.add_(0.5)  # leaves the version counter as it was
    masses = system.masses.detach().numpy()
    later, _ = two_evaluations()
    assert later is not first
    with torch.no_grad():
        acc = system(torch.tensor(0.0), y)[6:].numpy()
    np.testing.assert_allclose(acc, acceleration(q, masses, 1.0).ravel(), rtol=1e-13)
    assert system(torch.tensor(0.0), y).grad_fn is not None  # autograd records: in the graph

    y0 = torch.tensor(
        np.concatenate([FIGURE_EIGHT_POSITIONS.ravel(), FIGURE_EIGHT_VELOCITIES.ravel()])
    )
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    odeint(system, y0, t, grad="aca")  # fills the cache inside that solve
    system.params["masses"].raw.data.add_(-0.3)
    fresh = NBody(system.masses.detach().clone())
    got = odeint(system, y0, t, grad="aca").detach()
    assert torch.equal(got, odeint(fresh, y0, t))  # same steps, same arithmetic: bit for bit


def test_the_slope_of_a_positive_parameter_is_softplus_as_torch_differentiates_it() -> None:
    """``PhysicalParameter.slope`` (the closed forms' chain factor) against autograd through
    ``softplus`` itself, below, at and past its linear threshold (20, where torch's gradient
    becomes exactly 1): equal to rounding (1e-15), and 1 for a real parameter."""
    from physnode.systems.base import PhysicalParameter

    values = torch.tensor([0.05, 1.3, 19.5, 20.0, 20.5, 35.0], dtype=torch.float64)
    param = PhysicalParameter("m", values)
    param.set_learnable(True)
    (grad,) = torch.autograd.grad(param().sum(), param.raw)
    slope = param.slope(values)
    assert float((slope - grad).abs().max()) < 1e-15
    assert bool((slope[values > 20.1] == 1).all())
    real = PhysicalParameter("c", torch.tensor([-2.0, 3.0]), positive=False)
    real.set_learnable(True)
    assert torch.equal(real.slope(values), torch.ones(2, dtype=torch.float64))
