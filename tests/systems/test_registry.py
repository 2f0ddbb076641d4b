"""The system registry: entries derived from the decorated classes, and the per-system hooks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor

from physnode.errors import InvalidInputError
from physnode.systems import (
    SYSTEMS,
    NBody,
    Pendulum,
    RunOptions,
    System,
    make_system,
    register_system,
)

# What `physnode systems` printed before the registry was filled by decorators.
EXPECTED_DEFAULTS = {
    "n-body": {"masses": (1.0, 1.0, 1.0), "G": 1.0, "softening": 0.0, "dim": 2, "names": None},
    "three-body": {"preset": "figure-eight", "dim": 2, "seed": 0},
    "kepler": {"mu": 1.0, "eccentricity": 0.6},
    "pendulum": {"g": 9.81, "length": 1.0},
    "double-pendulum": {"m1": 1.0, "m2": 1.0, "l1": 1.0, "l2": 1.0, "g": 9.81},
    "lotka-volterra": {"alpha": 1.5, "beta": 1.0, "gamma": 3.0, "delta": 1.0},
    "lorenz": {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0},
    "van-der-pol": {"mu": 1.0},
    "duffing": {"alpha": -1.0, "beta": 1.0, "delta": 0.3, "gamma": 0.5, "omega": 1.2},
    "spring-chain": {"n_masses": 5, "m": 1.0, "k": 1.0},
}


def test_entries_are_unchanged_and_in_listing_order() -> None:
    assert list(SYSTEMS) == list(EXPECTED_DEFAULTS)
    for name, defaults in EXPECTED_DEFAULTS.items():
        assert dict(SYSTEMS[name].defaults) == defaults, name
        assert list(SYSTEMS[name].defaults) == list(defaults), name  # signature order
    assert SYSTEMS["n-body"].positive == ("masses", "G")
    assert SYSTEMS["duffing"].positive == ()
    assert SYSTEMS["three-body"].positive == ()
    assert SYSTEMS["three-body"].settable == SYSTEMS["n-body"].settable == ("G", "softening")
    assert [n for n, i in SYSTEMS.items() if i.particles] == ["n-body", "three-body"]


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_declared_positivity_is_what_the_parameters_enforce(name: str) -> None:
    system = make_system(name)
    enforced = {n for n, p in system.params.items() if p.positive}
    assert enforced == set(type(system).positive_parameters or ())
    if isinstance(SYSTEMS[name].factory, type):
        assert set(SYSTEMS[name].positive) == enforced


@pytest.fixture
def toy() -> Iterator[type[System]]:
    """A system registered for one test, then removed from the registry."""

    @register_system("toy-decay", description="y' = -rate y.")
    class Decay(System):
        positive_parameters = ("rate",)

        def __init__(self, rate: float = 2.0, offset: float = -1.0) -> None:
            super().__init__()
            self.add_parameter("rate", rate)
            self.add_parameter("offset", offset)
            self.state_names = ["y"]

        def forward(self, t: Tensor, y: Tensor) -> Tensor:
            return -self.param("rate", y) * (y - self.param("offset", y))

        def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
            return torch.ones(1, dtype=dtype)

    try:
        yield Decay
    finally:
        SYSTEMS.pop("toy-decay")


def test_one_decorated_class_is_a_whole_registration(toy: type[System]) -> None:
    info = SYSTEMS["toy-decay"]
    assert info.factory is toy and info.description == "y' = -rate y."
    assert dict(info.defaults) == {"rate": 2.0, "offset": -1.0}
    assert info.positive == ("rate",) and info.settable == ("rate", "offset")
    assert not make_system("toy-decay").params["offset"].positive
    with pytest.raises(InvalidInputError, match="'rate' of system 'toy-decay' must be positive"):
        make_system("toy-decay", rate=0.0)
    setup = info.setup(RunOptions(), {"rate": 3.0})
    assert setup.parameters == {"system": "toy-decay", "rate": 3.0, "offset": -1.0}
    assert setup.period is None and setup.default_t_end == 10.0
    with pytest.raises(InvalidInputError, match=r"valid parameters are \['rate', 'offset'\]"):
        info.setup(RunOptions(), {"G": 1.0})
    with pytest.raises(InvalidInputError, match="batch applies to the three-body system only"):
        info.setup(RunOptions(batch=2), {})


def test_registration_errors(toy: type[System]) -> None:
    with pytest.raises(InvalidInputError, match="registered already"):
        register_system("toy-decay", description="again")(toy)

    def needs_value(value: float) -> System:  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(InvalidInputError, match="'value' of needs_value needs a default"):
        register_system("toy-no-default", description="-")(needs_value)
    assert "toy-no-default" not in SYSTEMS


def test_to_trajectory_splits_particles_and_keeps_states_flat() -> None:
    times = np.linspace(0.0, 1.0, 4)
    body = NBody([1.0, 2.0], dim=2, names=["a", "b"])
    ys = np.arange(4 * body.dimension, dtype=np.float64).reshape(4, -1)
    traj = body.to_trajectory(times, ys, parameters={"system": "n-body"})
    assert traj.positions.shape == (4, 2, 2) and traj.body_names == ("a", "b")
    np.testing.assert_array_equal(traj.masses, [1.0, 2.0])
    np.testing.assert_array_equal(traj.to_state(), ys)
    pendulum = Pendulum()
    flat = pendulum.to_trajectory(times, ys[:, :2], energy=ys[:, 0])
    assert flat.state_names == ("theta", "omega") and flat.positions is None
    assert flat.parameters == {}


def test_run_parameters() -> None:
    assert NBody([1.0, 1.0], G=2.0).run_parameters() == {"G": 2.0, "softening": 0.0, "dim": 2}
    assert Pendulum(length=2.0).run_parameters() == {"g": 9.81, "length": 2.0}


def test_setups_of_the_particle_systems() -> None:
    three = SYSTEMS["three-body"].setup(RunOptions(preset="pythagorean"), {"G": 2.0})
    assert three.period is None and three.default_t_end == 70.0
    assert three.parameters == {
        "system": "three-body",
        "G": 2.0,
        "softening": 0.0,
        "dim": 2,
        "preset": "pythagorean",
    }
    many = SYSTEMS["n-body"].setup(RunOptions(bodies=4, dim=3), {})
    assert many.y0.shape == (24,) and many.parameters["n_bodies"] == 4
    with pytest.raises(InvalidInputError, match=r"valid parameters are \['G', 'softening'\]"):
        SYSTEMS["n-body"].setup(RunOptions(), {"masses": 1.0})


def test_lotka_volterra_without_interaction_is_exponential_growth_and_decay() -> None:
    """β = δ = 0 is allowed (the known physics of a universal differential equation): the
    solve then follows the closed form x0 e^{αt}, y0 e^{-γt}; 0 stays refused for the rates
    that may not vanish, and for a rate that is to be learned (softplus⁻¹(0) = -inf)."""
    from physnode.solver import odeint

    system = make_system("lotka-volterra", alpha=1.3, beta=0.0, gamma=1.8, delta=0.0)
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    y = odeint(system, torch.tensor([0.5, 4.0], dtype=torch.float64), t, rtol=1e-10, atol=1e-12)
    exact = torch.stack([0.5 * torch.exp(1.3 * t), 4.0 * torch.exp(-1.8 * t)], dim=-1)
    # rtol 1e-10 per step over ~tens of steps: well inside 1e-8 relative
    torch.testing.assert_close(y, exact, rtol=1e-8, atol=0.0)
    with pytest.raises(
        InvalidInputError, match="'alpha' of system 'lotka-volterra' must be positive;"
    ):
        make_system("lotka-volterra", alpha=0.0)
    with pytest.raises(InvalidInputError, match=r"'beta' .* must be positive or 0; got -0\.1"):
        make_system("lotka-volterra", beta=-0.1)
    with pytest.raises(InvalidInputError, match="needs a start > 0"):
        system.set_learnable("beta")
