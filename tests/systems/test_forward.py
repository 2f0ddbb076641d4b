"""Every system's vector field against an independent plain-numpy version of its equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physnode.errors import InvalidInputError
from physnode.systems import (
    SYSTEMS,
    DoublePendulum,
    Duffing,
    Kepler,
    Lorenz,
    LotkaVolterra,
    NBody,
    Pendulum,
    SpringChain,
    System,
    VanDerPol,
    make_system,
)

# Same equations evaluated in a different order: agreement to a few ulps of the O(1..100)
# values; 1e-12 relative leaves room for the larger terms (Lorenz, stiff-ish N-body pairs).
RTOL = 1e-12


def nbody_ref(y, masses, G, eps, dim):
    n = len(masses)
    q = y[: n * dim].reshape(n, dim)
    v = y[n * dim :].reshape(n, dim)
    a = np.zeros_like(q)
    for i in range(n):
        for j in range(n):
            if i != j:
                d = q[j] - q[i]
                a[i] += G * masses[j] * d / (d @ d + eps**2) ** 1.5
    return np.concatenate([v.ravel(), a.ravel()])


def double_pendulum_ref(y, m1, m2, l1, l2, g):
    """Lagrange's equations solved as a 2x2 linear system (a different route than the class)."""
    t1, t2, w1, w2 = y
    d = t1 - t2
    mass = np.array(
        [[(m1 + m2) * l1**2, m2 * l1 * l2 * np.cos(d)], [m2 * l1 * l2 * np.cos(d), m2 * l2**2]]
    )
    rhs = np.array(
        [
            -m2 * l1 * l2 * w2**2 * np.sin(d) - (m1 + m2) * g * l1 * np.sin(t1),
            m2 * l1 * l2 * w1**2 * np.sin(d) - m2 * g * l2 * np.sin(t2),
        ]
    )
    return np.concatenate([[w1, w2], np.linalg.solve(mass, rhs)])


def spring_chain_ref(y, n, m, k):
    lap = -2 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)
    return np.concatenate([y[n:], k / m * lap @ y[:n]])


CASES = [
    # (system, numpy reference f(t, y), state sampler)
    (
        NBody([1.3, 0.7, 2.1], G=1.5, softening=0.1, dim=2),
        lambda t, y: nbody_ref(y, [1.3, 0.7, 2.1], 1.5, 0.1, 2),
        12,
    ),
    (
        NBody([1.0, 2.0, 0.5, 1.5], G=0.8, dim=3),
        lambda t, y: nbody_ref(y, [1.0, 2.0, 0.5, 1.5], 0.8, 0.0, 3),
        24,
    ),
    (
        Kepler(mu=2.0),
        lambda t, y: np.concatenate([y[2:], -2.0 * y[:2] / np.linalg.norm(y[:2]) ** 3]),
        4,
    ),
    (Pendulum(g=9.81, length=2.0), lambda t, y: np.array([y[1], -9.81 / 2.0 * np.sin(y[0])]), 2),
    (
        DoublePendulum(m1=1.0, m2=2.0, l1=1.5, l2=0.5, g=9.81),
        lambda t, y: double_pendulum_ref(y, 1.0, 2.0, 1.5, 0.5, 9.81),
        4,
    ),
    (
        LotkaVolterra(1.3, 0.9, 0.8, 1.8),
        lambda t, y: np.array([1.3 * y[0] - 0.9 * y[0] * y[1], 1.8 * y[0] * y[1] - 0.8 * y[1]]),
        2,
    ),
    (
        Lorenz(),
        lambda t, y: np.array(
            [10 * (y[1] - y[0]), y[0] * (28 - y[2]) - y[1], y[0] * y[1] - 8 / 3 * y[2]]
        ),
        3,
    ),
    (VanDerPol(mu=2.5), lambda t, y: np.array([y[1], 2.5 * (1 - y[0] ** 2) * y[1] - y[0]]), 2),
    (
        Duffing(alpha=-1.0, beta=1.0, delta=0.3, gamma=0.5, omega=1.2),
        lambda t, y: np.array([y[1], -0.3 * y[1] + y[0] - y[0] ** 3 + 0.5 * math.cos(1.2 * t)]),
        2,
    ),
    (SpringChain(4, m=2.0, k=3.0), lambda t, y: spring_chain_ref(y, 4, 2.0, 3.0), 8),
]


@pytest.mark.parametrize(("system", "ref", "dim"), CASES, ids=lambda c: type(c).__name__)
def test_forward_matches_numpy(system: System, ref, dim: int) -> None:
    rng = np.random.default_rng(1)
    assert system.dimension == dim
    for _ in range(5):
        y = rng.uniform(0.2, 2.0, size=dim)  # positive: Lotka–Volterra, no zero radii
        t = rng.uniform(0.0, 10.0)
        got = system(torch.tensor(t, dtype=torch.float64), torch.from_numpy(y)).numpy()
        np.testing.assert_allclose(got, ref(t, y), rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize(("system", "ref", "dim"), CASES, ids=lambda c: type(c).__name__)
def test_batched_and_float32(system: System, ref, dim: int) -> None:
    y = torch.rand(2, 3, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = 0.2 + 1.8 * y
    t = torch.tensor(0.7, dtype=torch.float64)
    out = system(t, y)
    assert out.shape == y.shape and out.dtype == torch.float64
    one = torch.stack([system(t, row) for row in y.reshape(-1, dim)]).reshape(y.shape)
    # Batching only changes the memory layout: identical up to reduction order, ~1 ulp.
    torch.testing.assert_close(out, one, rtol=1e-14, atol=1e-14)
    out32 = system(t.float(), y.float())
    assert out32.dtype == torch.float32
    # float32 has ~6e-8 resolution; the N-body sums and Lorenz products lose a few ulps more.
    torch.testing.assert_close(out32.double(), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("system", "ref", "dim"), CASES, ids=lambda c: type(c).__name__)
def test_second_order_layout(system: System, ref, dim: int) -> None:
    if not system.second_order:
        assert isinstance(system, (Lorenz, LotkaVolterra))
        return
    y = torch.linspace(0.3, 1.7, dim, dtype=torch.float64)
    q, v = y.chunk(2)
    t = torch.tensor(0.4, dtype=torch.float64)
    out = system(t, y)
    # dq/dt is the velocity half of the state itself: a copy, so exact.
    torch.testing.assert_close(out[: dim // 2], v, rtol=0, atol=0)
    # ... and the second half, and the public acceleration(), are the independent numpy
    # equations' second half (same RTOL as above: the same equations in another order).
    expected = ref(0.4, y.numpy())[dim // 2 :]
    np.testing.assert_allclose(out[dim // 2 :].numpy(), expected, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(
        system.acceleration(t, q, v).numpy(), expected, rtol=RTOL, atol=1e-14
    )


def test_state_names_and_parameters() -> None:
    body = NBody([1.0, 2.0], dim=3, names=["sun", "earth"])
    assert body.state_names[:3] == ["x_sun", "y_sun", "z_sun"]
    assert body.state_names[6:9] == ["vx_sun", "vy_sun", "vz_sun"]
    assert body.parameter_names == ("masses", "G", "softening")
    assert Lorenz().parameter_names == ("sigma", "rho", "beta")
    params = DoublePendulum().physical_parameters()
    assert {k: float(v) for k, v in params.items()} == {
        "m1": 1.0,
        "m2": 1.0,
        "l1": 1.0,
        "l2": 1.0,
        "g": 9.81,
    }


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_registry_builds_every_system(name: str) -> None:
    info = SYSTEMS[name]
    system = make_system(name)
    assert info.description and info.name == name
    y0 = system.default_y0()
    assert y0.shape == (system.dimension,) and y0.dtype == torch.float64
    assert system.default_y0(torch.float32).dtype == torch.float32
    dydt = system(torch.tensor(0.0, dtype=torch.float64), y0)
    assert dydt.shape == y0.shape and bool(torch.isfinite(dydt).all())
    for value in system.invariants(y0.expand(2, -1)).values():
        assert value.shape == (2,)


def test_defaults_from_the_literature() -> None:
    torch.testing.assert_close(
        DoublePendulum().default_y0(),
        torch.tensor([3 * math.pi / 7, 3 * math.pi / 4, 0.0, 0.0]).double(),
    )
    torch.testing.assert_close(LotkaVolterra().default_y0(), torch.ones(2, dtype=torch.float64))
    lv = {k: float(v) for k, v in LotkaVolterra().physical_parameters().items()}
    assert lv == {"alpha": 1.5, "beta": 1.0, "gamma": 3.0, "delta": 1.0}
    kepler = Kepler()
    expected = torch.tensor([0.4, 0.0, 0.0, math.sqrt(1.6 / 0.4)], dtype=torch.float64)
    torch.testing.assert_close(kepler.default_y0(), expected, rtol=0, atol=1e-15)
    # H = -1/2 and a = 1 exactly in exact arithmetic; a few ulps in float64.
    assert abs(float(kepler.energy(kepler.default_y0())) + 0.5) < 1e-15


def test_make_system_errors_list_choices() -> None:
    with pytest.raises(InvalidInputError, match=r"valid systems are .*'kepler'"):
        make_system("keppler")
    with pytest.raises(InvalidInputError, match=r"valid parameters are .*'length'"):
        make_system("pendulum", lenght=2.0)
    with pytest.raises(InvalidInputError, match="'g' of system 'pendulum' must be positive"):
        make_system("pendulum", g=-9.81)
    with pytest.raises(InvalidInputError, match="must be positive"):
        make_system("n-body", masses=(1.0, 0.0))
    with pytest.raises(InvalidInputError, match=r"valid presets are .*'figure-eight'"):
        make_system("three-body", preset="figure8")


def test_constructor_errors() -> None:
    with pytest.raises(InvalidInputError, match="masses must be positive"):
        NBody([1.0, -1.0])
    with pytest.raises(InvalidInputError, match="dim must be 2 or 3"):
        NBody([1.0], dim=4)
    with pytest.raises(InvalidInputError, match="softening must be >= 0"):
        NBody([1.0, 1.0], softening=-0.1)
    with pytest.raises(InvalidInputError, match="one entry per body"):
        NBody([1.0, 1.0], names=["a"])
    with pytest.raises(InvalidInputError, match="eccentricity"):
        Kepler(eccentricity=1.0)
    with pytest.raises(InvalidInputError, match="delta"):
        Duffing(delta=-0.1)
    with pytest.raises(InvalidInputError, match="n_masses"):
        SpringChain(0)
    with pytest.raises(InvalidInputError, match="finite"):
        Pendulum(g=math.inf)


def test_set_learnable_unknown_name_lists_valid() -> None:
    with pytest.raises(InvalidInputError, match=r"valid parameters are \['g', 'length'\]"):
        Pendulum().set_learnable(["mass"])


def test_learnable_round_trip_keeps_values() -> None:
    system = Lorenz(sigma=10.0, rho=28.0, beta=8 / 3)
    before = system.physical_parameters()
    system.set_learnable(["sigma", "beta"])
    assert {n for n, _ in system.named_parameters()} == {
        "params.sigma.raw",
        "params.beta.raw",
    }
    during = system.physical_parameters()
    system.set_learnable(["sigma", "beta"], learnable=False)
    assert list(system.parameters()) == []
    for name, value in before.items():
        # softplus(inverse_softplus(x)) is exact to a few ulps.
        torch.testing.assert_close(during[name], value, rtol=1e-15, atol=0)
        torch.testing.assert_close(system.physical_parameters()[name], value, rtol=1e-15, atol=0)


def test_duffing_energy_only_when_conservative() -> None:
    y = torch.tensor([0.5, 0.1], dtype=torch.float64)
    assert Duffing().invariants(y) == {}
    assert Duffing(delta=0.0).invariants(y) == {}  # still forced
    assert not Duffing().separable and Duffing(delta=0.0).separable
    energy = Duffing(alpha=1.0, beta=2.0, delta=0.0, gamma=0.0).invariants(y)["energy"]
    assert float(energy) == pytest.approx(0.5 * 0.01 + 0.5 * 0.25 + 0.5 * 0.0625, rel=1e-15)


def _lv_rhs(u: np.ndarray, rates: np.ndarray) -> np.ndarray:
    a, b, g, d = rates
    return np.array([a * u[0] - b * u[0] * u[1], d * u[0] * u[1] - g * u[1]])


def _central(fun, x: np.ndarray) -> np.ndarray:
    eye = np.eye(len(x)) * 1e-6
    return np.stack([(fun(x + e) - fun(x - e)) / 2e-6 for e in eye], axis=1)


@pytest.mark.parametrize("values", [(1.5, 1.0, 3.0, 1.0), (1.3, 0.0, 2.7, 0.0)])
def test_lotka_volterra_closed_form_jacobians_match_central_differences(values) -> None:
    """``LotkaVolterra.jacobians`` (read by forward sensitivities) against central
    differences of the equations written in NumPy, in the state and in each rate (times
    softplus' slope 1/(1 + e^-raw), in NumPy), the interaction rates at 0 as in the UDE case
    and not. h = 1e-6 on O(1) values: truncation ~1e-12, rounding ~1e-10, so 1e-8 absolute on
    entries of O(1..3); a wrong sign or factor is O(1)."""
    names = ("alpha", "beta", "gamma", "delta")
    system = LotkaVolterra(*values)
    learned = [n for n, v in zip(names, values, strict=True) if v > 0]
    system.set_learnable(learned)
    u, rates = np.array([1.3, 0.7]), np.array(values)
    raws = [system.params[n].raw for n in learned]
    f, jac, rows = system.jacobians(torch.tensor(0.0), torch.tensor(u), raws)
    np.testing.assert_allclose(f.numpy(), _lv_rhs(u, rates), rtol=1e-14)
    np.testing.assert_allclose(jac.numpy(), _central(lambda x: _lv_rhs(x, rates), u), atol=1e-8)
    for name, row in zip(learned, rows, strict=True):
        k = names.index(name)
        by_rate = lambda r, k=k: _lv_rhs(u, np.concatenate([rates[:k], r, rates[k + 1 :]]))  # noqa: E731
        raw = float(system.params[name].raw.detach())
        expected = _central(by_rate, rates[k : k + 1]) / (1 + np.exp(-raw))
        np.testing.assert_allclose(row.numpy(), expected, atol=1e-8)
    batched = torch.ones(3, 2, dtype=torch.float64)
    assert system.jacobians(torch.tensor(0.0), batched, raws) is None
