"""Gradient benchmark: d loss / d masses through an adaptive solve of the three-body problem.

Compares physnode's gradient methods (aca, backprop, naive, adjoint, adjoint + seminorm) with
torchdiffeq (odeint, odeint_adjoint with and without the seminorm) and TorchDiffEqPack (its ACA
``odesolve`` with outputs at many times, and its memory-efficient ``odesolve_adjoint``, which
supports only the end time and is therefore chained over the output intervals).

Every (method, configuration) runs in a fresh subprocess so that its peak memory can be read
from ``ru_maxrss``. See ``benchmarks/README.md`` for what is measured and how.

    python benchmarks/gradients.py             # full run (~15 min on 2 CPU cores)
    python benchmarks/gradients.py --quick     # smoke run (< 1 min)
    python benchmarks/gradients.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import itertools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _threebody import (  # noqa: E402
    MASSES_MODEL,
    MASSES_TRUE,
    PERIOD,
    ThreeBody,
    batch_y0,
    rhs_numpy,
    rhs_sensitivity_numpy,
)

OUTPUTS_PER_PERIOD = 50
REF_TOL = 1e-13
FD_EPS = 1e-6

METHODS = [
    "physnode-aca",
    "physnode-backprop",
    "physnode-naive",
    "physnode-adjoint",
    "physnode-adjoint-seminorm",
    "physnode-forward",
    "torchdiffeq-odeint",
    "torchdiffeq-adjoint",
    "torchdiffeq-adjoint-seminorm",
    "tdpack-odesolve",
    "tdpack-adjoint-chained",
]

METHOD_NOTES = {
    "physnode-aca": "physnode.solve(grad='aca'), dopri5",
    "physnode-backprop": "physnode.solve(grad='backprop'), dopri5",
    "physnode-naive": "physnode.solve(grad='naive'), dopri5",
    "physnode-adjoint": "physnode.solve(grad='adjoint'), dopri5",
    "physnode-adjoint-seminorm": "physnode.solve(grad='adjoint', options={'seminorm': True})",
    "physnode-forward": (
        "physnode.solve(grad='forward'), dopri5: forward sensitivities with sensitivity error "
        "control (the steps also keep dy/dmasses to the tolerance)"
    ),
    "torchdiffeq-odeint": "torchdiffeq.odeint(method='dopri5'), backprop through the solver",
    "torchdiffeq-adjoint": "torchdiffeq.odeint_adjoint(method='dopri5')",
    "torchdiffeq-adjoint-seminorm": "odeint_adjoint(adjoint_options=dict(norm='seminorm'))",
    "tdpack-odesolve": (
        "TorchDiffEqPack.odesolve(method='dopri5', t_eval=...): ACA forward (grid search under "
        "no_grad, accepted steps re-run with autograd), outputs interpolated"
    ),
    "tdpack-adjoint-chained": (
        "TorchDiffEqPack.odesolve_adjoint (memory-efficient ACA, end time only) called once per "
        "output interval"
    ),
}


# ----------------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------------


def config_list(quick: bool, dtypes: list[str], tols: list[float], horizons: list[int]):
    """(dtype, tol, periods) in priority order: cheap and important configurations first."""
    if quick:
        return [("float64", 1e-6, 1)]
    out = []
    for tol in sorted(tols, reverse=True):
        for dtype in dtypes:
            if dtype == "float32" and tol < 1e-7:
                continue  # below float32 resolution, see README
            for p in sorted(horizons):
                out.append((dtype, tol, p))
    return out


def output_times(periods: int) -> np.ndarray:
    return np.linspace(0.0, periods * PERIOD, OUTPUTS_PER_PERIOD * periods + 1)


# ----------------------------------------------------------------------------------------------
# reference gradient (float64, cached)
# ----------------------------------------------------------------------------------------------


def _scipy_solve(masses, y0: np.ndarray, t: np.ndarray, tol: float) -> np.ndarray:
    from scipy.integrate import solve_ivp

    batch = y0.shape[0]
    sol = solve_ivp(
        lambda _t, y: rhs_numpy(y.reshape(batch, 12), masses).reshape(-1),
        (t[0], t[-1]),
        y0.reshape(-1),
        method="DOP853",
        rtol=tol,
        atol=tol,
        t_eval=t,
    )
    if not sol.success:
        raise RuntimeError(sol.message)
    return sol.y.T.reshape(len(t), batch, 12)


def _scipy_sensitivity_grad(y0, t, target, tol) -> np.ndarray:
    """dL/dm from the variational equations (forward sensitivities), DOP853."""
    from scipy.integrate import solve_ivp

    batch = y0.shape[0]
    z0 = np.concatenate([y0.reshape(-1), np.zeros(batch * 36)])
    sol = solve_ivp(
        lambda _t, z: rhs_sensitivity_numpy(z, MASSES_MODEL, batch),
        (t[0], t[-1]),
        z0,
        method="DOP853",
        rtol=tol,
        atol=tol,
        t_eval=t,
    )
    if not sol.success:
        raise RuntimeError(sol.message)
    z = sol.y.T
    x = z[:, : batch * 12].reshape(len(t), batch, 12)[..., :6]
    s = z[:, batch * 12 :].reshape(len(t), batch, 12, 3)[..., :6, :]
    return 2.0 * np.einsum("kbi,kbij->j", x - target, s)


def _loss_np(masses, y0, t, target, tol) -> float:
    ys = _scipy_solve(masses, y0, t, tol)
    return float(((ys[..., :6] - target) ** 2).sum())


def reference(periods: int, batch: int, cache_dir: Path, log) -> dict:
    """Target trajectory, reference gradient and its cross-checks; cached on disk."""
    key = hashlib.sha1(
        json.dumps([periods, batch, MASSES_MODEL, MASSES_TRUE, REF_TOL, FD_EPS, 2]).encode()
    ).hexdigest()[:12]
    path = cache_dir / f"ref_P{periods}_B{batch}_{key}.npz"
    if path.exists():
        data = np.load(path)
        return {k: data[k] for k in data.files}
    import torch

    import physnode

    log(f"  computing the reference for {periods} period(s), batch {batch} (cached afterwards)")
    t = output_times(periods)
    y0 = batch_y0(batch)
    t_start = time.perf_counter()
    target = _scipy_solve(MASSES_TRUE, y0, t, REF_TOL)[..., :6]
    # physnode ACA, DOP853, rtol = atol = 1e-13, float64
    model = ThreeBody(dtype=torch.float64)
    sol = physnode.solve(
        model,
        torch.tensor(y0),
        torch.tensor(t),
        rtol=REF_TOL,
        atol=REF_TOL,
        method="dop853",
        grad="aca",
    )
    loss = (sol.ys[..., :6] - torch.tensor(target)).square().sum()
    loss.backward()
    g_ref = model.masses.grad.numpy().copy()
    t_ref = time.perf_counter() - t_start
    # cross-checks: forward sensitivities (two tolerances) and central finite differences
    g_sens13 = _scipy_sensitivity_grad(y0, t, target, 1e-13)
    g_sens12 = _scipy_sensitivity_grad(y0, t, target, 1e-12)
    g_fd = np.zeros(3)
    for j in range(3):
        mp, mm = np.array(MASSES_MODEL), np.array(MASSES_MODEL)
        mp[j] += FD_EPS
        mm[j] -= FD_EPS
        g_fd[j] = (_loss_np(mp, y0, t, target, REF_TOL) - _loss_np(mm, y0, t, target, REF_TOL)) / (
            2 * FD_EPS
        )
    # closest approach of two bodies along the perturbed trajectory (chaos indicator)
    dense = _scipy_solve(MASSES_MODEL, y0, np.linspace(0, t[-1], 200 * periods * 50 + 1), 1e-12)
    pos = dense[..., :6].reshape(dense.shape[0], batch, 3, 2)
    dist = np.linalg.norm(pos[:, :, :, None] - pos[:, :, None, :], axis=-1) + 1e9 * np.eye(3)
    data = {
        "t": t,
        "target": target,
        "g_ref": g_ref,
        "g_sens13": g_sens13,
        "g_sens12": g_sens12,
        "g_fd": g_fd,
        "loss_ref": np.array(float(loss.detach())),
        "min_dist": np.array(dist.min()),
        "t_min_dist": np.array(
            np.linspace(0, t[-1], dense.shape[0])[dist.min(axis=(1, 2, 3)).argmin()]
        ),
        "ref_seconds": np.array(t_ref),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def rel_err(g, g_ref) -> float:
    g, g_ref = np.asarray(g, dtype=float), np.asarray(g_ref, dtype=float)
    return float(np.linalg.norm(g - g_ref) / np.linalg.norm(g_ref))


# ----------------------------------------------------------------------------------------------
# one case (runs in a fresh subprocess)
# ----------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _run_method(method: str, model, y0, t, tol: float):
    """Forward solve; returns ``(ys, stats_or_None)``; ``ys`` has shape ``(len(t), *y0.shape)``."""
    import torch

    if method.startswith("physnode-"):
        import physnode

        grad = method.split("-")[1]
        options = {"seminorm": True} if method.endswith("seminorm") else None
        sol = physnode.solve(
            model, y0, t, rtol=tol, atol=tol, method="dopri5", grad=grad, options=options
        )
        return sol.ys, sol.stats
    if method.startswith("torchdiffeq-"):
        import torchdiffeq

        if method == "torchdiffeq-odeint":
            return torchdiffeq.odeint(model, y0, t, rtol=tol, atol=tol, method="dopri5"), None
        kw = {}
        if method.endswith("seminorm"):
            kw["adjoint_options"] = dict(norm="seminorm")
        ys = torchdiffeq.odeint_adjoint(model, y0, t, rtol=tol, atol=tol, method="dopri5", **kw)
        return ys, None
    if method == "tdpack-odesolve":
        from TorchDiffEqPack import odesolve

        tl = t.detach().cpu().tolist()
        opts = dict(method="dopri5", t0=tl[0], t1=tl[-1], h=None, rtol=tol, atol=tol)
        opts.update(t_eval=tl[1:], neval_max=10**7)
        ys = odesolve(model, y0, opts)
        return torch.cat([y0.unsqueeze(0), ys.reshape(len(tl) - 1, *y0.shape)]), None
    if method == "tdpack-adjoint-chained":
        from TorchDiffEqPack import odesolve_adjoint

        tl = t.detach().cpu().tolist()
        out, y = [y0], y0
        for a, b in itertools.pairwise(tl):
            opts = dict(method="dopri5", t0=a, t1=b, h=None, rtol=tol, atol=tol, neval_max=10**7)
            y = odesolve_adjoint(model, y, opts)
            out.append(y)
        return torch.stack(out), None
    raise ValueError(f"unknown method {method!r}")


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> tuple[int, bool]:
    """Return freed heap to the OS, reset the peak-RSS mark; returns (baseline bytes, exact).

    Linux: writing 5 to /proc/self/clear_refs resets VmHWM, so the peak of the measured run is
    VmHWM - VmRSS(now). Elsewhere fall back to ru_maxrss (a process-lifetime high-water mark,
    which under-reads when the run fits below the import-time peak).
    """
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        rss = _proc_status_kib("VmRSS")
        if rss is not None and _proc_status_kib("VmHWM") is not None:
            return rss * 1024, True
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False


def _peak_rss_bytes(exact: bool) -> int:
    if exact:
        return (_proc_status_kib("VmHWM") or 0) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_single(spec: dict) -> dict:
    """Measure one (method, configuration): gradient, time, peak memory, evaluations."""
    import torch

    torch.set_num_threads(spec["threads"])
    device, method, tol = spec["device"], spec["method"], spec["tol"]
    dtype = getattr(torch, spec["dtype"])
    ref = np.load(spec["ref_path"])
    t = torch.tensor(ref["t"], dtype=torch.float64, device=device)
    target = torch.tensor(ref["target"], dtype=dtype, device=device)
    y0_np = batch_y0(spec["batch"])
    y0 = torch.tensor(y0_np if spec["batch"] > 1 else y0_np[0], dtype=dtype, device=device)
    if spec["batch"] == 1:
        target = target[:, 0]

    def once(t_grid, tgt):
        model = ThreeBody(dtype=dtype, device=device)
        _sync(device)
        t0 = time.perf_counter()
        ys, stats = _run_method(method, model, y0, t_grid, tol)
        nfe_fwd = model.nfe
        loss = (ys[..., :6] - tgt).square().sum()
        loss.backward()
        _sync(device)
        elapsed = time.perf_counter() - t0
        nfe = {"fwd": nfe_fwd, "bwd": model.nfe - nfe_fwd}
        if stats is not None:  # physnode's own counters (must agree with the module's)
            nfe["stats_fwd"], nfe["stats_bwd"] = stats.nfe_forward, stats.nfe_backward
            nfe["accepted"], nfe["rejected"] = stats.n_accepted, stats.n_rejected
            nfe["backward_steps"] = stats.n_steps_backward
        grad = model.masses.grad.detach().double().cpu().numpy().tolist()
        return elapsed, grad, nfe, float(loss.detach())

    # warm-up on a short grid (first calls allocate thread pools, autograd engine, caches)
    once(t[:3], target[:3])
    exact = True
    if device.startswith("cuda"):
        gc.collect()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base, exact = _reset_peak_rss()
    elapsed, grad, nfe, loss = once(t, target)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_rss_bytes(exact) - base
    times = [elapsed]
    if not spec["quick"]:
        extra = 4 if elapsed < 0.5 else 2 if elapsed < 3.0 else 0
        for _ in range(extra):
            times.append(once(t, target)[0])
    return {
        "time": statistics.median(times),
        "times": times,
        "grad": grad,
        "nfe": nfe,
        "peak_bytes": int(peak),
        "peak_exact": exact,
        "loss": loss,
    }


# ----------------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------------


def available_methods(selected: list[str]) -> tuple[list[str], dict[str, str]]:
    missing = {}
    for pkg, prefix in (("torchdiffeq", "torchdiffeq-"), ("TorchDiffEqPack", "tdpack-")):
        try:
            __import__(pkg)
        except Exception as exc:  # pragma: no cover - depends on the environment
            for m in selected:
                if m.startswith(prefix):
                    missing[m] = f"{pkg} not importable: {exc}"
    return [m for m in selected if m not in missing], missing


def fmt_bytes(b: int | None) -> str:
    if b is None:
        return "-"
    return f"{b / 2**20:.1f}"


def fmt_err(e: float | None) -> str:
    if e is None:
        return "-"
    if not math.isfinite(e):
        return str(e)
    return f"{e:.1e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--batch", type=int, default=1, help="trajectories per solve (default 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 period, 1 repeat")
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    ap.add_argument("--tols", nargs="+", type=float, default=[1e-6, 1e-10])
    ap.add_argument("--periods", nargs="+", type=int, default=[1, 5, 20])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per case (default 1)")
    ap.add_argument(
        "--case-limit",
        type=float,
        default=45.0,
        help="skip a case whose one fwd+bwd is expected to exceed this many seconds (default 45)",
    )
    ap.add_argument(
        "--mem-limit-gib", type=float, default=8.0, help="skip cases expected to exceed this"
    )
    ap.add_argument("--cache", type=Path, default=HERE / ".cache", help="reference cache folder")
    ap.add_argument("--json", type=Path, help="write all results to this JSON file")
    ap.add_argument("--single", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.single:
        result = run_single(json.loads(args.single))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    start = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    import torch

    methods, missing = available_methods(args.methods)
    configs = config_list(args.quick, args.dtypes, args.tols, args.periods)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    log(f"# three-body gradient benchmark  ({now})")
    log(
        f"# torch {torch.__version__}, device {args.device}, batch {args.batch}, "
        f"torch threads per case {args.threads}, python {platform.python_version()}"
    )
    log(
        f"# figure-eight start, masses {MASSES_MODEL} (target: masses {MASSES_TRUE}), "
        f"{OUTPUTS_PER_PERIOD} outputs per period, T = {PERIOD}"
    )
    for m, why in missing.items():
        log(f"# {m}: skipped ({why})")

    refs = {}
    for p in sorted({c[2] for c in configs}):
        refs[p] = reference(p, args.batch, args.cache, log)
        r = refs[p]
        checks = {
            "sensitivities 1e-13": rel_err(r["g_sens13"], r["g_ref"]),
            "sensitivities 1e-12": rel_err(r["g_sens12"], r["g_ref"]),
            f"central FD (eps {FD_EPS:g})": rel_err(r["g_fd"], r["g_ref"]),
        }
        r["uncertainty"] = max(checks.values())
        log(
            f"# reference {p:>2} period(s): dL/dm = {np.array2string(r['g_ref'], precision=6)}; "
            + ", ".join(f"{k} {v:.1e}" for k, v in checks.items())
            + f"; closest approach {float(r['min_dist']):.2e} at t = {float(r['t_min_dist']):.2f}"
        )

    results: list[dict] = []
    by_key: dict[tuple, dict] = {}
    header = (
        f"{'dtype':<8}{'tol':>7}{'P':>4}  {'method':<30}{'rel.err':>9}{'time s':>9}{'runs':>5}"
        f"{'peak MiB':>10}{'NFE':>9}  note"
    )
    log("")
    log(header)
    log("-" * len(header))
    for dtype, tol, periods in configs:
        ref = refs[periods]
        ref_path = next(iter(args.cache.glob(f"ref_P{periods}_B{args.batch}_*.npz")))
        for method in methods:
            row = {"dtype": dtype, "tol": tol, "periods": periods, "method": method}
            prev = [
                by_key.get((dtype, tol, q, method)) for q in sorted(args.periods) if q < periods
            ]
            prev = [q for q in prev if q is not None]
            skip = None
            if prev:
                last = prev[-1]
                if last.get("skipped"):
                    skip = "shorter horizon already skipped"
                else:
                    scale = periods / last["periods"]
                    est_t = last["time"] * scale
                    est_m = last["peak_bytes"] * scale
                    if est_t > args.case_limit:
                        skip = f"est. {est_t:.0f} s > limit {args.case_limit:.0f} s"
                    elif est_m > args.mem_limit_gib * 2**30:
                        skip = f"est. {est_m / 2**30:.1f} GiB > {args.mem_limit_gib} GiB"
            if skip is None:
                spec = dict(
                    method=method,
                    dtype=dtype,
                    tol=tol,
                    periods=periods,
                    batch=args.batch,
                    device=args.device,
                    threads=args.threads,
                    quick=args.quick,
                    ref_path=str(ref_path),
                )
                cmd = [sys.executable, str(Path(__file__).resolve()), "--single", json.dumps(spec)]
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
                timeout = 3 * args.case_limit + 60
                try:
                    proc = subprocess.run(
                        cmd, capture_output=True, text=True, timeout=timeout, env=env
                    )
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                    if proc.returncode != 0 or not lines:
                        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                        skip = f"failed: {tail[:160]}"
                    else:
                        row.update(json.loads(lines[-1][len("RESULT ") :]))
                except subprocess.TimeoutExpired:
                    skip = f"timeout after {timeout:.0f} s"
            if skip is not None:
                row["skipped"] = skip
            else:
                row["rel_err"] = rel_err(row["grad"], ref["g_ref"])
                # physnode counts a batched ACA replay call as one evaluation per step replayed
                nfe = row["nfe"]
                row["nfe_total"] = nfe.get("stats_fwd", nfe["fwd"]) + nfe.get(
                    "stats_bwd", nfe["bwd"]
                )
            results.append(row)
            by_key[(dtype, tol, periods, method)] = row
            if "skipped" in row:
                log(f"{dtype:<8}{tol:>7.0e}{periods:>4}  {method:<30}  skipped ({row['skipped']})")
            else:
                log(
                    f"{dtype:<8}{tol:>7.0e}{periods:>4}  {method:<30}{fmt_err(row['rel_err']):>9}"
                    f"{row['time']:>9.3f}{len(row['times']):>5}{fmt_bytes(row['peak_bytes']):>10}"
                    f"{row['nfe_total']:>9}"
                )
        log(
            f"{'':<19}reference uncertainty at {periods} period(s): "
            f"{ref['uncertainty']:.1e} (errors below it are not resolved)"
        )

    # ---- target ratios -------------------------------------------------------------------
    log("")
    log("# target ratios (same run)")
    ratios = []

    def get(dtype, tol, periods, method):
        r = by_key.get((dtype, tol, periods, method))
        return None if r is None or "skipped" in r else r

    for dtype, tol, periods in configs:
        aca = get(dtype, tol, periods, "physnode-aca")
        if aca is None:
            continue
        entry = {"dtype": dtype, "tol": tol, "periods": periods}
        adj = get(dtype, tol, periods, "torchdiffeq-adjoint")
        ode = get(dtype, tol, periods, "torchdiffeq-odeint")
        naive = get(dtype, tol, periods, "physnode-naive")
        bp = get(dtype, tol, periods, "physnode-backprop")
        entry["aca_over_tdq_adjoint_time"] = aca["time"] / adj["time"] if adj else None
        entry["aca_over_tdq_odeint_time"] = aca["time"] / ode["time"] if ode else None
        entry["aca_over_naive_mem"] = (
            aca["peak_bytes"] / naive["peak_bytes"] if naive and naive["peak_bytes"] > 0 else None
        )
        entry["aca_err"] = aca["rel_err"]
        entry["backprop_err"] = bp["rel_err"] if bp else None
        entry["aca_vs_backprop"] = rel_err(aca["grad"], bp["grad"]) if bp else None
        ratios.append(entry)

    def f(x, fmt="{:.2f}"):
        return "-" if x is None else fmt.format(x)

    log(
        f"{'dtype':<8}{'tol':>7}{'P':>4}  {'ACA/tdq-adjoint':>16}{'ACA/tdq-odeint':>15}"
        f"{'ACA/naive mem':>14}{'ACA err':>9}{'bp err':>9}{'|ACA-bp|/|bp|':>14}"
    )
    for e in ratios:
        log(
            f"{e['dtype']:<8}{e['tol']:>7.0e}{e['periods']:>4}  "
            f"{f(e['aca_over_tdq_adjoint_time']):>16}{f(e['aca_over_tdq_odeint_time']):>15}"
            f"{f(e['aca_over_naive_mem'], '{:.3f}'):>14}{fmt_err(e['aca_err']):>9}"
            f"{fmt_err(e['backprop_err']):>9}{fmt_err(e['aca_vs_backprop']):>14}"
        )
    log(
        "targets: ACA/tdq-adjoint time <= 0.5; ACA/tdq-odeint time <= 1.0; "
        "ACA/naive memory <= 0.2 at 20 periods; ACA error ~ backprop error"
    )
    total = time.perf_counter() - start
    log(f"# total wall time {total:.0f} s")
    if args.json:
        payload = {
            "argv": sys.argv,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "device": args.device,
            "batch": args.batch,
            "threads": args.threads,
            "results": results,
            "ratios": ratios,
            "references": {
                str(p): {
                    k: np.asarray(v).tolist() for k, v in r.items() if k not in ("t", "target")
                }
                for p, r in refs.items()
            },
            "total_seconds": total,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
