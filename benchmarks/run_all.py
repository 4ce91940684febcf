"""Every benchmark figure beside its anchor, from one run, with the machine stated under every table.

    python benchmarks/run_all.py [--quick] [--only overhead gmm runs] [--runs theory-tests ...] [--record]

Tables (each followed by the machine line: cores, CPU model, torch, Python, load average):
  overhead  bench_solver_overhead.py: framework us/step beside the plain tensor loop and diffusers' scheduler.step
  gmm       bench_gmm_denoiser.py: the GMM denoiser beside torch.distributions (its own table, printed as it is)
  runs      the test and theory runs (wall and CPU time of the whole process tree), "now" beside "previous": the
            figures recorded in benchmarks/timings.json by the last `--record` (the previous commit's, when the
            file is recorded with each commit)

--quick keeps it to a few minutes: fewer repeats and solvers for the overhead table, and of the runs only the ones
named by --runs (default with --quick: none; the previous figures are still printed). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMINGS = HERE / "timings.json"

#: the timed runs: name -> (command, what it is); run from the repository root with CI=true
RUNS = {
    "theory-tests": ([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "theory"],
                     "`pytest -m theory` (goal: 60 s wall on 2 cores)"),
    "default-tests": ([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                      "the default `python -m pytest` (goal: 5 min)"),
    "theory-cli": ([sys.executable, "-m", "sdm_verify.cli", "theory", "--db", "{tmp}/theory.sqlite", "--out",
                    "{tmp}/report", "--no-baseline"], "`sdm-verify theory` from scratch (goal: 90 s)"),
    "validate-lms": ([sys.executable, "-m", "sdm_verify.cli", "validate", "diffusers:LMSDiscreteScheduler", "--quick"],
                     "`sdm-verify validate diffusers:LMSDiscreteScheduler --quick`"),
}
QUICK_SOLVERS = ["euler", "heun", "ddim", "dpm_solver_1", "dpmpp_2m", "unipc"]


def machine() -> dict:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_version, threads = torch.__version__, torch.get_num_threads()
    except ImportError:
        torch_version, threads = "not installed", None
    return {"cores": os.cpu_count(), "cpu": model, "torch": torch_version, "torch_threads": threads,
            "python": platform.python_version(), "loadavg": [round(v, 2) for v in os.getloadavg()]}


def machine_line() -> str:
    m = machine()
    return (f"machine: {m['cores']} cores, {m['cpu']}, torch {m['torch']} ({m['torch_threads']} threads), "
            f"Python {m['python']}, load average {m['loadavg'][0]:.2f} {m['loadavg'][1]:.2f} {m['loadavg'][2]:.2f}")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip() + (" (+ uncommitted changes)" if _dirty() else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _dirty() -> bool:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                         text=True)
    return bool(out.stdout.strip())


def timed(cmd: list[str], timeout: float | None = None) -> dict:
    """Run cmd from the repository root: wall time, CPU time of the process tree (children's user + system), rc."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "CI": "true"}, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "rc": proc.returncode, "summary": tail[-160:]}


# ----------------------------------------------------------------------------------------- tables


def table_overhead(quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "overhead.json"
        cmd = [sys.executable, str(HERE / "bench_solver_overhead.py"), "--json", str(out)]
        cmd += ["--repeats", "5", "--steps", "20", "--solvers", *QUICK_SOLVERS] if quick else []
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"bench_solver_overhead.py failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
            return {}
        data = json.loads(out.read_text())
    meta = data["meta"]
    print(f"\n## Solver overhead: us per step, process CPU time, best of {meta['repeats']}, {meta['steps']} steps, "
          f"batch {'x'.join(map(str, meta['shape']))} float32, constant denoiser")
    print("anchors: the plain tensor loop of the same update (ratio = framework / plain, target <= 1.2) and "
          f"diffusers' scheduler.step ({meta['diffusers']})\n")
    print("| solver | framework | plain loop | ratio | diffusers step | diffusers / plain |")
    print("|---|---:|---:|---:|---:|---:|")
    fmt = lambda v, spec=".1f": "-" if v is None else format(v, spec)  # noqa: E731
    for row in data["rows"]:
        us = row[f"batch_{meta['clock']}_us"]
        print(f"| {row['solver']} | {fmt(us['framework'])} | {fmt(us.get('plain'))} | {fmt(row['ratio'], '.2f')} | "
              f"{fmt(us.get('diffusers'))} | {fmt(row['diffusers_ratio'], '.2f')} |")
    print(f"\n{machine_line()}; torch threads in the benchmark {meta['threads']}")
    return data


def table_gmm(quick: bool) -> None:
    cmd = [sys.executable, str(HERE / "bench_gmm_denoiser.py")] + (["--repeats", "3"] if quick else [])
    print("\n## GMM denoiser (bench_gmm_denoiser.py; anchor: torch.distributions, as that script prints it)\n")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout.rstrip() or "(no output)")
    if proc.returncode != 0:
        print(f"bench_gmm_denoiser.py failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    print(f"\n{machine_line()}")


def table_runs(names: list[str], record: bool) -> None:
    previous = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    prev_runs = previous.get("runs", {})
    now = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cmd = [part.format(tmp=tmp) for part in RUNS[name][0]]
            print(f"running {name}: {' '.join(cmd[1:])} ...", file=sys.stderr, flush=True)
            now[name] = timed(cmd)
    print("\n## Test and theory runs: wall and CPU time (the whole process tree), now beside previous")
    prev_where = (f"previous: commit {previous.get('commit', '?')}, recorded {previous.get('recorded', '?')} on "
                  f"{_machine_text(previous.get('machine'))}") if previous else "previous: none recorded"
    print(f"{prev_where}\n")
    print("| run | now wall s | now CPU s | previous wall s | previous CPU s | now / previous (wall) | rc | what |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, (_, what) in RUNS.items():
        n, p = now.get(name), prev_runs.get(name)
        if n is None and p is None:
            continue
        ratio = f"{n['wall_s'] / p['wall_s']:.2f}" if n and p and p.get("wall_s") else "-"
        print(f"| {name} | {n['wall_s'] if n else 'not run'} | {n['cpu_s'] if n else '-'} | "
              f"{_num(p, 'wall_s')} | {_num(p, 'cpu_s')} | {ratio} | {n['rc'] if n else '-'} | "
              f"{what} |")
    for name, n in now.items():
        print(f"  {name}: {n['summary']}")
    print(f"\n{machine_line()}; commit {git_commit()}")
    if record and now:
        runs = {**prev_runs, **now}
        TIMINGS.write_text(json.dumps({"commit": git_commit(), "recorded": time.strftime("%Y-%m-%d %H:%M"),
                                       "machine": machine(), "runs": runs}, indent=1) + "\n")
        print(f"recorded in {TIMINGS.relative_to(ROOT)} ({', '.join(now)})")


def _num(run: dict | None, key: str):
    return "-" if not run or run.get(key) is None else run[key]


def _machine_text(m: dict | None) -> str:
    if not m:
        return "an unrecorded machine"
    return f"{m.get('cores')} cores, {m.get('cpu')}, torch {m.get('torch')}, load average {m.get('loadavg')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few minutes: fewer repeats and solvers, no timed runs "
                    "unless named with --runs")
    ap.add_argument("--only", nargs="+", choices=("overhead", "gmm", "runs"), default=("overhead", "gmm", "runs"))
    ap.add_argument("--runs", nargs="*", choices=tuple(RUNS), default=None,
                    help="which runs to time (default: all, or none with --quick)")
    ap.add_argument("--record", action="store_true", help=f"store the runs timed now in {TIMINGS.name} (the "
                    "'previous' of the next run)")
    args = ap.parse_args()
    print(f"# sdm-verify benchmarks ({'quick' if args.quick else 'full'}), commit {git_commit()}")
    print(machine_line())
    if shutil.which("git") is None:
        print("(git not found: commits shown as ?)")
    if "overhead" in args.only:
        table_overhead(args.quick)
    if "gmm" in args.only:
        table_gmm(args.quick)
    if "runs" in args.only:
        names = args.runs if args.runs is not None else ([] if args.quick else list(RUNS))
        table_runs(names, args.record)


if __name__ == "__main__":
    main()
