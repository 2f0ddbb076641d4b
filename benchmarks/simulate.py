"""Simulation benchmark: physnode vs scipy DOP853 (and REBOUND IAS15 when installed).

Prints wall time and energy error side by side for 100 figure-eight periods and Burrau's
Pythagorean problem to t = 70, then the throughput of a batched ensemble of three-body starts.

    python benchmarks/simulate.py [--quick] [--device cuda] [--ensemble 10000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import scipy.integrate
import torch

from physnode import odeint, solve
from physnode.solver.symplectic import integrate_symplectic
from physnode.systems import three_body
from physnode.systems.presets import random_three_body_batch


def _gravity_numpy(masses: np.ndarray, dim: int):
    n = len(masses)

    def rhs(_t, y):
        q = y[: n * dim].reshape(n, dim)
        d = q[None, :, :] - q[:, None, :]
        r2 = (d * d).sum(-1) + np.eye(n)
        inv3 = r2**-1.5 * (1 - np.eye(n))
        acc = (d * (inv3 * masses)[..., None]).sum(1)
        return np.concatenate([y[n * dim :], acc.reshape(-1)])

    return rhs


def _energy_numpy(y: np.ndarray, masses: np.ndarray, dim: int) -> np.ndarray:
    n = len(masses)
    q = y[..., : n * dim].reshape(*y.shape[:-1], n, dim)
    v = y[..., n * dim :].reshape(*y.shape[:-1], n, dim)
    kin = 0.5 * (masses * (v**2).sum(-1)).sum(-1)
    pot = np.zeros(y.shape[:-1])
    for i in range(n):
        for j in range(i + 1, n):
            pot -= masses[i] * masses[j] / np.linalg.norm(q[..., i, :] - q[..., j, :], axis=-1)
    return kin + pot


def _rel_drift(energy: np.ndarray) -> float:
    return float(np.abs((energy - energy[0]) / energy[0]).max())


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _rebound_run(masses, y0, dim, t_out):
    import rebound

    sim = rebound.Simulation()
    sim.integrator = "ias15"
    n = len(masses)
    q = y0[: n * dim].reshape(n, dim)
    v = y0[n * dim :].reshape(n, dim)
    for i in range(n):
        pos = list(q[i]) + [0.0] * (3 - dim)
        vel = list(v[i]) + [0.0] * (3 - dim)
        sim.add(m=masses[i], x=pos[0], y=pos[1], z=pos[2], vx=vel[0], vy=vel[1], vz=vel[2])
    e0 = sim.energy()
    worst = 0.0
    for tk in t_out[1:]:
        sim.integrate(tk, exact_finish_time=1)
        worst = max(worst, abs((sim.energy() - e0) / e0))
    return worst, sim


def _orbit_rows(name: str, t_end: float, n_out: int, device: str, yoshida_dt: float | None):
    system, y0, _ = three_body(name)
    masses = system.masses.detach().numpy()
    t = torch.linspace(0, t_end, n_out, dtype=torch.float64)
    rows = []

    def run_physnode():
        with torch.no_grad():
            return solve(system.to(device), y0.to(device), t.to(device), rtol=1e-12, atol=1e-12,
                         method="dop853")  # fmt: skip

    sol, wall = _timed(run_physnode)
    e = system.energy(sol.ys.cpu()).detach().numpy()
    rows.append((name, "physnode dop853 1e-12", wall, _rel_drift(e), sol.stats.n_accepted))

    rhs = _gravity_numpy(masses, 2)
    ref, wall = _timed(
        lambda: scipy.integrate.solve_ivp(
            rhs,
            (0, t_end),
            y0.numpy(),
            method="DOP853",
            t_eval=t.numpy(),
            rtol=1e-12,
            atol=1e-12,
        )
    )
    e = _energy_numpy(ref.y.T, masses, 2)
    rows.append((name, "scipy DOP853 1e-12", wall, _rel_drift(e), ref.t.size and ref.nfev // 12))

    if yoshida_dt is not None:
        with torch.no_grad():
            ys, wall = _timed(
                lambda: integrate_symplectic(system, y0, t, yoshida_dt, method="yoshida4")
            )
        e = system.energy(ys).detach().numpy()
        rows.append((name, f"physnode yoshida4 dt={yoshida_dt:.2g}", wall, _rel_drift(e), None))

    try:
        (drift, _sim), wall = _timed(lambda: _rebound_run(masses, y0.numpy(), 2, t.numpy()))
        rows.append((name, "REBOUND IAS15", wall, drift, None))
    except ImportError:
        rows.append((name, "REBOUND IAS15", None, None, "not installed"))
    return rows


def _ensemble(batch: int, device: str, dtype: torch.dtype, steps: str) -> tuple[float, int, int]:
    """Trajectories per second, steps (summed over members when per-sample) and member
    evaluations of one batched solve."""
    system, y0 = random_three_body_batch(batch, seed=0, mode="figure-eight", perturbation=1e-2)
    system = system.to(device=device, dtype=dtype)
    y0 = y0.to(device=device, dtype=dtype)
    _, _, period = three_body("figure-eight")
    t = torch.linspace(0, period, 100, dtype=torch.float64, device=device)
    rtol = 1e-8 if dtype == torch.float64 else 1e-5
    with torch.no_grad():
        odeint(system, y0[:8], t[:3], rtol=rtol, atol=rtol)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        options = {"steps": steps} if steps == "per-sample" else None
        sol = solve(system, y0, t, rtol=rtol, atol=rtol, method="dopri5", options=options)
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    evals = sol.stats.n_sample_evals if steps == "per-sample" else sol.stats.nfe_forward * batch
    return batch / wall, sol.stats.n_accepted, evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 periods, t=20, small ensemble")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ensemble", type=int, default=10_000)
    parser.add_argument("--ensemble-only", action="store_true", help="skip the single orbits")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    machine = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"# machine: {machine}, torch {torch.__version__}, threads {threads}, {args.device}")
    if not args.ensemble_only:
        _orbits(args)
    print("\n# ensemble: perturbed figure-eight starts, 1 period, 100 outputs, dopri5, one batch")
    for dtype in (torch.float64, torch.float32):
        for steps in ("shared", "per-sample"):
            n = 1000 if args.quick else args.ensemble
            rate, n_steps, evals = _ensemble(n, args.device, dtype, steps)
            print(
                f"batch {n:>6} {dtype!s:<14} {steps:<10} {rate:12.0f} trajectories/s   "
                f"({n_steps} steps, {evals} member evaluations)"
            )


def _orbits(args: argparse.Namespace) -> None:
    """The single-orbit rows: figure eight and Pythagorean, every integrator."""
    _, _, period = three_body("figure-eight")
    periods = 10 if args.quick else 100
    rows = _orbit_rows("figure-eight", periods * period, 20 * periods, args.device, period / 2000)
    rows += _orbit_rows("pythagorean", 20.0 if args.quick else 70.0, 700, args.device, None)
    print(f"\n{'problem':<14} {'integrator':<32} {'wall s':>8} {'max |dE/E|':>11} {'steps':>8}")
    for problem, integ, wall, drift, steps in rows:
        wall_s = f"{wall:8.2f}" if wall is not None else "       -"
        drift_s = f"{drift:11.2e}" if drift is not None else "          -"
        print(
            f"{problem:<14} {integ:<32} {wall_s} {drift_s} {steps if steps is not None else '':>8}"
        )


if __name__ == "__main__":
    main()
