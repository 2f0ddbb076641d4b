"""Scale-out benchmark: ``physnode fit`` on many files, one process against ``torchrun`` ranks.

Two jobs on the same data files (three-body, unequal masses, a hidden linear drag, from the
reference simulator ``tests/reference.py``):

1. independent fits: ``physnode fit *.h5 -o DIR`` (physics model, masses), the files shared
   out over the ranks;
2. one shared fit: ``physnode fit *.h5 --model hybrid --correction field --shared correction``,
   every rank fitting its share of the files and the shared network's gradients all-reduced.

Each runs with 1 process and under ``torchrun --nproc_per_node=N`` (gloo, CPU), every process
with ``OMP_NUM_THREADS=1`` so that the ranks do not fight over cores. The table gives the fit
time the command reports, the total wall time (start-up included), the speed-up against one
process, and the largest difference of the fitted parameters and weights from the
one-process run's, relative to each array's largest entry (the distributed fit must be the
same fit).

    python benchmarks/scaling.py                     # 4 files, 1 and 2 ranks, 2 repeats
    python benchmarks/scaling.py --files 8 --ranks 1,2 --repeats 3 --epochs 40

Timings are only meaningful on an otherwise idle machine with at least max(ranks) cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physnode.data.fitfile import read_fit
from tests.distributed.datafiles import write_data

#: a hidden drag the physics model does not know (the hybrid's correction is to learn it)
DRAG = 0.05
#: the "N of M files in S s" line of the CLI summary
SUMMARY = re.compile(r"of \d+ files in ([0-9.]+) s")


def masses_for(index: int) -> tuple[float, float, float]:
    """Unequal masses for file ``index``, 0.7-1.3, seeded by the index (none is the default
    start of ones)."""
    rng = np.random.default_rng(100 + index)
    return tuple(float(m) for m in rng.uniform(0.7, 1.3, size=3))  # type: ignore[return-value]


def write_files(directory: Path, count: int, points: int) -> list[Path]:
    return [
        write_data(directory / f"f{i:03d}.h5", masses_for(i), points, drag=DRAG)
        for i in range(count)
    ]


def command(ranks: int, files: list[Path], out: Path, job: str, epochs: int) -> list[str]:
    fit = ["physnode", "fit", *map(str, files), "-o", str(out), "--epochs", str(epochs)]
    if job == "shared":
        fit += ["--model", "hybrid", "--correction", "field", "--shared", "correction"]
    if ranks == 1:
        return fit
    launcher = shutil.which("torchrun") or "torchrun"
    return [launcher, f"--nproc_per_node={ranks}", "--standalone", "--no-python", *fit]


def run_once(cmd: list[str]) -> tuple[float, float]:
    """(fit seconds the command reports, total wall seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    found = SUMMARY.findall(proc.stdout + proc.stderr)
    return (float(found[-1]) if found else float("nan")), total


def parameters(out: Path) -> dict[str, np.ndarray]:
    """Every fit file's fitted parameters and network weights, keyed ``<file>/<name>``."""
    values = {}
    for path in sorted(out.glob("*.fit.h5")):
        record = read_fit(path)
        for name, value in {**record.params, **record.network}.items():
            values[f"{path.name}/{name}"] = np.asarray(value, dtype=float)
    return values


def max_relative(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(a[k]), 1e-300))) for k in a)


def measure(job: str, ranks: int, files: list[Path], work: Path, args) -> dict:
    fits, totals, params = [], [], None
    for repeat in range(args.repeats):
        out = work / f"{job}-{ranks}-{repeat}"
        fit_s, total_s = run_once(command(ranks, files, out, job, args.epochs))
        fits.append(fit_s)
        totals.append(total_s)
        params = parameters(out)
    return {"job": job, "ranks": ranks, "fit": fits, "total": totals, "params": params}


def span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.1f} s" if abs(hi - lo) < 0.05 else f"{lo:.1f}-{hi:.1f} s"


def report(rows: list[dict]) -> None:
    print("| job | ranks | fit time | total | speed-up (fit) | speed-up (total) | max rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["job"] == row["job"] and r["ranks"] == 1)
        fit_x = statistics.median(base["fit"]) / statistics.median(row["fit"])
        total_x = statistics.median(base["total"]) / statistics.median(row["total"])
        diff = max_relative(base["params"], row["params"])
        print(
            f"| {row['job']} | {row['ranks']} | {span(row['fit'])} | {span(row['total'])} "
            f"| {fit_x:.2f}x | {total_x:.2f}x | {diff:.1e} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=4, help="data files (default 4)")
    parser.add_argument("--points", type=int, default=30, help="samples per file (default 30)")
    parser.add_argument("--ranks", default="1,2", help="process counts (default 1,2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (default 2)")
    parser.add_argument("--epochs", type=int, default=30, help="Adam epochs (default 30)")
    parser.add_argument("--jobs", default="independent,shared", help="which jobs")
    args = parser.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    if 1 not in ranks:
        ranks.insert(0, 1)
    print(f"# scaling benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    print(f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# {args.files} files x {args.points} samples, {args.epochs} epochs, "
          f"{args.repeats} repeats, OMP_NUM_THREADS=1\n")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = write_files(work, args.files, args.points)
        rows = [measure(job, n, files, work, args) for job in args.jobs.split(",") for n in ranks]
    report(rows)


if __name__ == "__main__":
    main()
