"""``simulate`` refuses settings that would be ignored and records only those that acted."""

from __future__ import annotations

import numpy as np
import pytest

from physnode.data import InitialConditions
from physnode.errors import InvalidInputError
from physnode.simulate import simulate


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"system": "pendulum", "preset": "pythagorean"}, "preset applies to the three-body"),
        ({"system": "lorenz", "dim": 3}, "dim applies to"),
        ({"system": "three-body", "bodies": 4}, "bodies applies to the n-body"),
        ({"system": "pendulum", "step_size": 0.01}, "step_size applies to fixed-step"),
    ],
)
def test_ignored_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        simulate(points=5, t_end=0.1, **kwargs)


def test_recorded_settings_are_those_that_acted() -> None:
    fixed, _ = simulate("pendulum", method="rk4", step_size=0.01, points=5, t_end=0.1)
    assert fixed.parameters["step_size"] == 0.01
    assert "rtol" not in fixed.parameters and "atol" not in fixed.parameters
    symplectic, _ = simulate("three-body", method="yoshida4", points=5, periods=0.01)
    assert "rtol" not in symplectic.parameters and symplectic.parameters["step_size"] > 0
    adaptive, _ = simulate("pendulum", rtol=1e-9, atol=1e-10, points=5, t_end=0.1)
    assert (adaptive.parameters["rtol"], adaptive.parameters["atol"]) == (1e-9, 1e-10)
    assert "step_size" not in adaptive.parameters


def test_masses_replace_the_start_s() -> None:
    """``masses`` act: the file records them, and the motion from the same start follows
    them (by t = 0.1 period the bodies have moved apart from the unit-mass run by far more
    than the 1e-13 solver tolerance)."""
    import numpy as np

    traj, _ = simulate("three-body", masses=(0.8, 1.3, 1.0), points=5, periods=0.1)
    unit, _ = simulate("three-body", points=5, periods=0.1)
    np.testing.assert_array_equal(traj.masses, [0.8, 1.3, 1.0])
    np.testing.assert_array_equal(traj.positions[0], unit.positions[0])  # same start
    assert np.abs(traj.positions[-1] - unit.positions[-1]).max() > 1e-3
    with pytest.raises(InvalidInputError, match="one per body"):
        simulate("n-body", bodies=4, masses=(1.0, 2.0), points=5, t_end=0.1)
    with pytest.raises(InvalidInputError, match="positive"):
        simulate("three-body", masses=(1.0, -1.0, 1.0), points=5, periods=0.01)
    with pytest.raises(InvalidInputError, match="masses applies to"):
        simulate("lorenz", masses=(1.0,), points=5, t_end=0.1)


# ------------------------------------------------------------------ initial conditions
def _figure_eight_json(path, **extra):
    """The figure-eight preset's start written as an initial-condition JSON file."""
    import json

    from physnode.systems import PRESETS

    preset = PRESETS["figure-eight"]
    start = {"positions": preset.positions, "velocities": preset.velocities, **extra}
    path.write_text(json.dumps(start), encoding="utf-8")
    return path


def test_a_json_start_runs_like_the_preset(tmp_path) -> None:
    """The figure-eight start read from JSON gives the preset's run. JSON stores each float64
    in its shortest round-tripping form, so the start is bit-identical and both runs do the
    same arithmetic (difference 0 in practice). 1e-12 leaves room only for round-off from a
    different order of operations; a wrong start or wrong masses moves the bodies by more than
    1e-3 within this time (see ``test_masses_replace_the_start_s``)."""
    import numpy as np

    path = _figure_eight_json(tmp_path / "fig8.json")
    from_file, _ = simulate("three-body", initial=path, t_end=1.0, points=11)
    preset, _ = simulate("three-body", t_end=1.0, points=11)
    np.testing.assert_allclose(from_file.positions, preset.positions, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(from_file.times, preset.times)  # same grid, 0 .. 1
    assert from_file.parameters["initial"] == str(path)
    assert len(from_file.parameters["initial_sha256"]) == 64
    assert "preset" not in from_file.parameters and "period" not in from_file.parameters


def test_continuing_from_an_h5md_file_joins_a_straight_run(tmp_path) -> None:
    """0..T/2, written, then T/2..T from the file's last frame ends where one 0..T run ends.

    The two runs take different steps, so they differ by their integration errors only. dop853
    at rtol = atol = 1e-13 takes ~190 steps per figure-eight period; with per-step errors of
    ~rtol and a linearly stable orbit (no exponential growth) each run's global error is at
    most ~190 * 1e-13 ≈ 2e-11 (measured difference: ~1e-12). 1e-10 is 5x that bound, while a
    start off by one output sample (0.06 time units at speed ~1) would differ by ~6e-2."""
    import numpy as np

    from physnode.data import write_trajectory
    from physnode.systems import PRESETS

    period = PRESETS["figure-eight"].period
    first, _ = simulate("three-body", t_end=period / 2, points=51)
    path = write_trajectory(tmp_path / "first.h5", first)
    second, summary = simulate("three-body", initial=path, t_end=period / 2, points=51)
    straight, _ = simulate("three-body", t_end=period, points=101)
    assert second.times[0] == first.times[-1]  # the new run starts at the file's last time
    assert summary.t_end == straight.times[-1] == period  # T/2 + T/2 is exact in float64
    np.testing.assert_allclose(second.times, straight.times[50:], rtol=1e-15)  # round-off only
    for name in ("positions", "velocities"):
        np.testing.assert_allclose(
            getattr(second, name)[-1], getattr(straight, name)[-1], rtol=0, atol=1e-10
        )
    assert second.parameters["initial_t0"] == first.times[-1]


def test_masses_from_a_csv_are_used(tmp_path) -> None:
    """A CSV's masses act: stored, in the energy, and in the motion (the same start and
    masses given through ``masses=`` make the same run)."""
    import numpy as np

    from physnode.systems import PRESETS

    preset = PRESETS["figure-eight"]
    masses = (0.8, 1.3, 1.0)
    rows = [
        f"{vy!r},{x!r},{m!r},{y!r},{vx!r}"
        for m, (x, y), (vx, vy) in zip(masses, preset.positions, preset.velocities, strict=True)
    ]
    path = tmp_path / "start.csv"
    path.write_text("vy,x,m,y,vx\n" + "\n".join(rows) + "\n", encoding="utf-8")
    traj, _ = simulate("three-body", initial=path, t_end=0.5, points=5)
    np.testing.assert_array_equal(traj.masses, masses)
    q, v, m = np.array(preset.positions), np.array(preset.velocities), np.array(masses)
    kinetic = 0.5 * np.sum(m * (v**2).sum(1))
    pairs = [(0, 1), (0, 2), (1, 2)]
    potential = -sum(m[i] * m[j] / np.linalg.norm(q[i] - q[j]) for i, j in pairs)
    # a dozen float64 operations in another order: round-off of a few ulp of |E| ~ 1
    assert traj.energy[0] == pytest.approx(kinetic + potential, rel=1e-14)
    given, _ = simulate("three-body", masses=masses, t_end=0.5, points=5)
    # same start, masses and arithmetic: only round-off in a different order of operations
    np.testing.assert_allclose(traj.positions, given.positions, rtol=0, atol=1e-12)


def test_n_body_from_a_file_takes_its_bodies_and_dimension(tmp_path) -> None:
    import json

    start = {
        "positions": [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, -1.0, -0.5]],
        "velocities": [[0.0, 0.3, 0.0], [0.0, -0.3, 0.0], [-0.3, 0.0, 0.1], [0.3, 0.0, -0.1]],
    }
    path = tmp_path / "four.json"
    path.write_text(json.dumps(start), encoding="utf-8")
    traj, _ = simulate("n-body", initial=path, t_end=0.1, points=3)
    assert traj.positions.shape == (3, 4, 3)
    assert traj.parameters["n_bodies"] == 4 and traj.parameters["dim"] == 3
    assert traj.masses.tolist() == [1.0] * 4  # neither the file nor masses= gives any


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "lagrange"}, "preset cannot be combined with initial"),
        ({"dim": 3}, "dim cannot be combined with initial"),
        ({"batch": 2}, "batch cannot be combined with initial"),
        ({"periods": 1.0, "t_end": None}, "periods cannot be combined with initial"),
        ({"masses": (1.0, 1.0, 2.0)}, "gives masses .* and masses .* were given too"),
        ({"system": "n-body", "bodies": 3}, "bodies cannot be combined with initial"),
        ({"system": "pendulum"}, "initial applies to the particle systems"),
    ],
)
def test_settings_that_initial_replaces_are_refused(tmp_path, kwargs: dict, match: str) -> None:
    path = _figure_eight_json(tmp_path / "fig8.json", masses=[1.0, 1.0, 1.0])
    with pytest.raises(InvalidInputError, match=match):
        simulate(**{"points": 5, "t_end": 0.1, "initial": path, **kwargs})


def test_three_body_needs_three_bodies(tmp_path) -> None:
    import json

    path = tmp_path / "two.json"
    path.write_text(json.dumps({"positions": [[1, 0], [-1, 0]], "velocities": [[0, 0]] * 2}))
    with pytest.raises(InvalidInputError, match="three-body needs exactly 3 bodies; it holds 2"):
        simulate("three-body", initial=path, points=5, t_end=0.1)


def test_a_batch_steps_each_member_on_its_own_and_records_it():
    run = {"periods": 1.0, "points": 20, "rtol": 1e-10, "atol": 1e-10}
    per, per_summary = simulate("three-body", batch=6, seed=4, **run)
    shared, shared_summary = simulate("three-body", batch=6, seed=4, steps="shared", **run)
    assert per.parameters["steps"] == "per-sample" and shared.parameters["steps"] == "shared"
    for member in (0, 5):  # each member is its own single run from the same start
        start = InitialConditions(
            positions=per.positions[0, member], velocities=per.velocities[0, member],
            masses=per.masses,
        )  # fmt: skip
        alone, _ = simulate("three-body", initial=start, t_end=float(per.times[-1]), **{
            k: v for k, v in run.items() if k != "periods"
        })  # fmt: skip
        # the same steps up to an ulp of h from vectorised rounding (measured 1e-13)
        assert np.abs(per.positions[:, member] - alone.positions).max() < 1e-11
    # rtol 1e-10 over one period: both modes within 1e-7 of each other
    assert np.abs(per.positions - shared.positions).max() < 1e-7
    assert per_summary.nfe < shared_summary.nfe  # no member paced by the hardest


def test_steps_only_where_they_act():
    with pytest.raises(InvalidInputError, match="steps applies to a batch"):
        simulate("three-body", steps="shared", points=5)
    with pytest.raises(InvalidInputError, match="steps applies to a batch"):
        simulate("three-body", batch=2, method="rk4", steps="shared", points=5)
    with pytest.raises(InvalidInputError, match="steps must be one of"):
        simulate("three-body", batch=2, steps="each", points=5)
