"""Per-step solver overhead: everything a solver step costs except the denoiser.

Every registered solver (sdm_verify.solvers.available(); the native-time ones with the VE process) runs N = 50 steps
of an EDM grid (80 -> 0.002, rho = 7) on a 64x3x32x32 float32 batch with a denoiser that returns a precomputed
tensor (cost ~0). Reported: microseconds per step (best of --repeats runs; medians in the JSON) and the ratio to a
plain tensor loop that writes the same update inline, without the framework (no registry, no StepContext, no grid
or finiteness checks, coefficients as Python floats). Plain loops exist for euler, heun, ddim, dpmpp_2m, dpmpp_3m,
unipc (bh2, p = 2, with corrector), deis_tab3 and ipndm; each is first checked to reproduce the framework's output
(on a Gaussian denoiser, float64) so the comparison is between the same arithmetic. Target: within 1.2x.

Beside them, diffusers' `scheduler.step` for the same method (Euler/Heun/DPMSolverMultistep 2M and 3M/UniPC/DEIS,
plus DDIM and IPNDM), looping over `scheduler.timesteps` with the same precomputed model output (`set_timesteps`
is not timed). diffusers is not a project dependency: the column is skipped if it does not import.

Times are process CPU time by default (--clock wall for perf_counter), best of --repeats, with the allocator
pinned (--malloc default to leave glibc's defaults; see pin_malloc). --ops adds aten call counts per step.

    python benchmarks/bench_solver_overhead.py [--repeats 15] [--steps 50] [--threads 1] [--ops] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import statistics
import time

import torch

from analytic import processes
from sdm_verify import schedules, solvers

SHAPE = (64, 3, 32, 32)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


# ----------------------------------------------------------------------------------------- plain loops
# Each loop takes (D, x, sig) with sig the grid as Python floats, and does the solver's arithmetic inline.


def plain_euler(D, x, sig):
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        d = (x - D(x, s)) / s
        x = x + (t - s) * d
    return x


def plain_heun(D, x, sig):
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        d = (x - D(x, s)) / s
        xp = x + (t - s) * d
        d2 = (xp - D(xp, t)) / t
        x = x + (t - s) * 0.5 * (d + d2)
    return x


def plain_ddim(D, x, sig):
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        x = (t / s) * x + (-math.expm1(-math.log(s / t))) * D(x, s)
    return x


def plain_dpmpp_2m(D, x, sig):
    prev = None
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        d = D(x, s)
        h = math.log(s / t)
        p1 = -math.expm1(-h)
        if prev is None:
            x = (t / s) * x + p1 * d
        else:
            r0 = math.log(sig[i - 1] / s) / h
            x = (t / s) * x + p1 * (1 + 1 / (2 * r0)) * d + (-p1 / (2 * r0)) * prev
        prev = d
    return x


def plain_dpmpp_3m(D, x, sig):
    """DPM-Solver++(3M), the authors' coefficients (c2 = 1), weights on (D_s, D_1, D_2) as Python floats."""
    d1 = d2 = None
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        d = D(x, s)
        h = math.log(s / t)
        p1 = -math.expm1(-h)
        if i == 0:
            x = (t / s) * x + p1 * d
        elif i == 1:
            r0 = math.log(sig[i - 1] / s) / h
            x = (t / s) * x + p1 * (1 + 1 / (2 * r0)) * d + (-p1 / (2 * r0)) * d1
        else:
            r0, r1 = math.log(sig[i - 1] / s) / h, math.log(sig[i - 2] / sig[i - 1]) / h
            p2 = math.expm1(-h) / h + 1
            p3 = 0.5 - p2 / h
            q0, q1, q2 = 1 / (r0 * (r0 + r1)), -(1 / r0 + 1 / r1) / (r0 + r1), 1 / (r1 * (r0 + r1))  # D2
            w0 = p1 + p2 * (1 / r0 + r0 * q0) + p3 * q0
            w1 = p2 * (-1 / r0 + r0 * q1) + p3 * q1
            w2 = p2 * r0 * q2 + p3 * q2
            x = (t / s) * x + w0 * d + w1 * d1 + w2 * d2
        d1, d2 = d, d1
    return x


def plain_unipc(D, x, sig):
    """UniPC bh2, predictor order 2 (UniP-2 = DPM-Solver++(2M)) with the UniC corrector (orders 1 then 2)."""
    x_prev = d_prev = d_prev2 = None
    order_prev = 0
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        d = D(x, s)
        if i > 0:  # correct the step sig[i-1] -> s with the new value d (no NFE)
            sp = sig[i - 1]
            h_prev = math.log(sp / s)
            hh = -h_prev
            B = math.expm1(hh)
            if order_prev == 1:
                x = (s / sp) * x_prev + (-B / 2) * d_prev + (-B / 2) * d
            else:
                a = -math.log(sig[i - 2] / sp) / h_prev  # node of the point before, -r0
                b1 = (B / hh - 1) / B
                b2 = 2 * ((B / hh - 1) / hh - 0.5) / B
                rho_a = (b1 - b2) / (1 - a)
                rho_1 = b1 - rho_a
                c_a, c_1 = B * rho_a / a, B * rho_1
                x = (s / sp) * x_prev + (-B + c_a + c_1) * d_prev + (-c_a) * d_prev2 + (-c_1) * d
        h = math.log(s / t)
        p1 = -math.expm1(-h)
        order = min(2, i + 1)
        if order == 1:
            x_next = (t / s) * x + p1 * d
        else:
            r0 = math.log(sig[i - 1] / s) / h
            x_next = (t / s) * x + p1 * (1 + 1 / (2 * r0)) * d + (-p1 / (2 * r0)) * d_prev
        x_prev, d_prev2, d_prev, order_prev = x, d_prev, d, order
        x = x_next
    return x


def _ab_weights(nodes):
    """int_0^1 l_j(u) du for the Lagrange basis on `nodes` (Adams-Bashforth weights in units of the step)."""
    weights = []
    for j, cj in enumerate(nodes):
        poly, den = [1.0], 1.0  # monomial coefficients of prod_{m != j} (u - c_m)
        for m, cm in enumerate(nodes):
            if m != j:
                poly = [a - cm * b for a, b in zip([0.0] + poly, poly + [0.0], strict=True)]
                den *= cj - cm
        weights.append(sum(a / (k + 1) for k, a in enumerate(poly)) / den)
    return weights


def plain_deis_tab3(D, x, sig):
    eps = []  # newest first
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        eps.insert(0, (x - D(x, s)) / s)
        del eps[4:]
        H = t - s
        nodes = [(sig[i - j] - s) / H for j in range(len(eps))]
        for w, e in zip(_ab_weights(nodes), eps, strict=True):
            x = x + (H * w) * e
    return x


AB = ([1.0], [1.5, -0.5], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24])


def plain_ipndm(D, x, sig):
    eps = []  # newest first
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        eps.insert(0, (x - D(x, s)) / s)
        del eps[4:]
        H = t - s
        for c, e in zip(AB[len(eps) - 1], eps, strict=True):
            x = x + (H * c) * e
    return x


PLAIN = {
    "euler": plain_euler,
    "heun": plain_heun,
    "ddim": plain_ddim,
    "dpmpp_2m": plain_dpmpp_2m,
    "dpmpp_3m": plain_dpmpp_3m,
    "unipc": plain_unipc,
    "deis_tab3": plain_deis_tab3,
    "ipndm": plain_ipndm,
}
#: registered solvers that are the same method as a plain loop (aliases)
PLAIN_OF = {**{k: k for k in PLAIN}, "unipc_bh2_p2": "unipc", "dpm_solver_1": "ddim"}


# ----------------------------------------------------------------------------------------- diffusers


def diffusers_schedulers() -> tuple[dict, str]:
    """{solver name: factory of a configured diffusers scheduler}, or ({}, why) if diffusers does not import."""
    try:
        import diffusers as df
    except Exception as exc:  # noqa: BLE001 - any import failure only skips the column
        return {}, f"diffusers unavailable ({type(exc).__name__}: {exc})"
    made = {
        "euler": lambda: df.EulerDiscreteScheduler(),
        "heun": lambda: df.HeunDiscreteScheduler(),
        "ddim": lambda: df.DDIMScheduler(),
        "dpmpp_2m": lambda: df.DPMSolverMultistepScheduler(solver_order=2, algorithm_type="dpmsolver++"),
        "dpmpp_3m": lambda: df.DPMSolverMultistepScheduler(solver_order=3, algorithm_type="dpmsolver++"),
        "unipc": lambda: df.UniPCMultistepScheduler(solver_order=2, solver_type="bh2"),
        "deis_tab3": lambda: df.DEISMultistepScheduler(solver_order=3),
        "ipndm": lambda: df.IPNDMScheduler(),
    }
    made["unipc_bh2_p2"], made["dpm_solver_1"] = made["unipc"], made["ddim"]
    return made, f"diffusers {df.__version__}"


def diffusers_run(factory, n_steps: int, x: torch.Tensor, out: torch.Tensor):
    """A closure running one full step loop of a fresh diffusers scheduler (setup outside the timed part)."""

    def prepare():
        sched = factory()
        sched.set_timesteps(n_steps)
        # Euler/Heun warn unless scale_model_input (a division of the model input, not part of step) was called
        if hasattr(sched, "is_scale_input_called"):
            sched.is_scale_input_called = True
        return sched

    def run(sched):
        sample = x
        for t in sched.timesteps:
            sample = sched.step(out, t, sample, return_dict=False)[0]
        return sample

    return prepare, run


# ----------------------------------------------------------------------------------------- timing


def pin_malloc() -> str:
    """Stop glibc from returning freed memory to the OS (mallopt M_TRIM_THRESHOLD) and from serving the 0.8 MB
    tensors by mmap (M_MMAP_THRESHOLD = 32 MiB). By default both happen, depending on the history of allocations, so
    that a tensor op sometimes runs on fresh pages and pays ~190 page faults: 2-4x its cost, at random, to the
    framework and the plain loop alike. Pinning makes the comparison reproducible."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 32 << 20) == 1 and libc.mallopt(-1, (1 << 31) - 1) == 1  # M_MMAP_, M_TRIM_THRESHOLD
    except OSError:
        ok = False
    return "pinned (glibc mallopt: mmap threshold 32 MiB, no trim)" if ok else "default (mallopt unavailable)"


def time_runs(runners: dict, repeats: int) -> dict:
    """{key: (prepare, run)} -> {key: {"cpu": [s], "wall": [s]}} per run; the runs of different keys are
    interleaved so that load changes on a shared machine hit every column alike. cpu = process CPU time (not
    counting time the process waits for a core), wall = perf_counter."""
    times = {k: {"cpu": [], "wall": []} for k in runners}
    for prep, run in runners.values():  # warm-up
        run(prep())
    for _ in range(repeats):
        for k, (prep, run) in runners.items():
            arg = prep()
            c0, w0 = time.process_time(), time.perf_counter()
            run(arg)
            times[k]["wall"].append(time.perf_counter() - w0)
            times[k]["cpu"].append(time.process_time() - c0)
    return times


def check_plain_loops(grid: list[float]) -> dict:
    """max |framework - plain| / max |framework| per plain loop, on a Gaussian denoiser D = x/(1 + sigma^2), float64."""
    x = 80.0 * torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def D(y, s):
        return y / (1 + s * s)

    errs = {}
    for name, plain in PLAIN.items():
        ref = solvers.get(name)(D, x.clone(), torch.tensor(grid, dtype=torch.float64))
        errs[name] = float((ref - plain(D, x.clone(), grid)).abs().max() / ref.abs().max())
    return errs


OPS = ("add", "sub", "mul", "div", "isfinite", "all", "sum")


def op_counts(fn, n_steps: int) -> dict:
    """aten calls per step of one run of fn() (torch.profiler): a load-independent account of the extra passes."""
    from torch.profiler import profile

    with profile() as prof:
        fn()
    counts = dict.fromkeys(OPS, 0)
    for event in prof.events():
        op = event.name.removeprefix("aten::")
        if event.name.startswith("aten::") and op in counts:
            counts[op] += 1
    return {k: v / n_steps for k, v in counts.items()}


def print_op_counts(grid_t, grid, denoiser, x, n: int) -> dict:
    print(f"aten calls per step (framework | plain): {', '.join(OPS)}")
    table = {}
    for name, plain in PLAIN.items():
        solver = solvers.get(name)
        fw = op_counts(lambda s=solver: s(denoiser, x, grid_t), n)
        pl = op_counts(lambda p=plain: p(denoiser, x, grid), n)
        table[name] = {"framework": fw, "plain": pl}
        cols = " ".join(f"{fw[k]:4.1f}" for k in OPS) + "  | " + " ".join(f"{pl[k]:4.1f}" for k in OPS)
        print(f"{name:<10} {cols}")
    return table


def runners_for(name: str, solver, plain_key, sched: dict, grid_t, grid, x, out, n: int) -> dict:
    def denoiser(y, sigma):
        return out

    runners = {"framework": (lambda: None, lambda _: solver(denoiser, x, grid_t))}
    if plain_key:
        runners["plain"] = (lambda: None, lambda _, p=PLAIN[plain_key]: p(denoiser, x, grid))
    if name in sched:
        runners["diffusers"] = diffusers_run(sched[name], n, x, out)
    return runners


def fmt(v, width: int, spec: str = ".1f") -> str:
    return format(v, f">{width}{spec}") if v is not None else "-".rjust(width)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="the clock of the table (both in JSON)")
    ap.add_argument("--malloc", choices=("pinned", "default"), default="pinned", help="see pin_malloc")
    ap.add_argument("--solvers", nargs="*", default=None, help="subset of solver names (default: all registered)")
    ap.add_argument("--ops", action="store_true", help="also count aten calls per step (framework vs plain loop)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    malloc = pin_malloc() if args.malloc == "pinned" else "default"
    torch.set_num_threads(args.threads)
    n = args.steps
    grid_t = schedules.get("edm")(n, SIGMA_MIN, SIGMA_MAX)
    grid = grid_t.tolist()

    errs = check_plain_loops(grid)
    bad = {k: v for k, v in errs.items() if not v < 1e-12}  # float64 round-off of ~200 tensor ops: ~1e-14
    if bad:
        raise SystemExit(f"plain loops do not reproduce the framework: {bad}")

    gen = torch.Generator().manual_seed(0)
    x, out = SIGMA_MAX * torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
    x1, out1 = x[:1, :1, :1, :1].clone(), out[:1, :1, :1, :1].clone()  # one element: the fixed cost per step

    ve = processes.get("ve")
    sched, df_note = diffusers_schedulers()
    names = args.solvers or solvers.available()
    rows = []
    print(
        f"us per step ({args.clock} time), {n} steps, batch {'x'.join(map(str, SHAPE))} float32, constant denoiser;"
        " 'fixed': the same on a 1-element x"
    )
    print(
        f"{'solver':<18} {'framework':>9} {'plain':>8} {'ratio':>6} {'diffusers':>9} {'df/plain':>8} | "
        f"{'fixed fw':>8} {'plain':>6} {'diffusers':>9}"
    )
    for name in names:
        solver = solvers.get(name, process=ve) if solvers.needs_process(name) else solvers.get(name)
        plain_key = PLAIN_OF.get(name)
        row = {"solver": name, "plain_loop": plain_key}
        for size, (xs, os_) in (("batch", (x, out)), ("fixed", (x1, out1))):
            times = time_runs(runners_for(name, solver, plain_key, sched, grid_t, grid, xs, os_, n), args.repeats)
            for clock in ("cpu", "wall"):
                row[f"{size}_{clock}_us"] = {k: 1e6 * min(v[clock]) / n for k, v in times.items()}
                row[f"{size}_{clock}_median_us"] = {k: 1e6 * statistics.median(v[clock]) / n for k, v in times.items()}
        us, fixed = row[f"batch_{args.clock}_us"], row[f"fixed_{args.clock}_us"]
        row["ratio"] = us["framework"] / us["plain"] if "plain" in us else None
        row["diffusers_ratio"] = us["diffusers"] / us["plain"] if "plain" in us and "diffusers" in us else None
        rows.append(row)
        print(
            f"{name:<18} {us['framework']:>9.1f} {fmt(us.get('plain'), 8)} {fmt(row['ratio'], 6, '.2f')} "
            f"{fmt(us.get('diffusers'), 9)} {fmt(row['diffusers_ratio'], 8, '.2f')} | "
            f"{fixed['framework']:>8.1f} {fmt(fixed.get('plain'), 6)} {fmt(fixed.get('diffusers'), 9)}"
        )
    ops = print_op_counts(grid_t, grid, lambda y, s: out, x, n) if args.ops else None
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps": n,
        "shape": list(SHAPE),
        "repeats": args.repeats,
        "clock": args.clock,
        "malloc": malloc,
        "diffusers": df_note,
        "plain_check_rel_err": errs,
        "loadavg": os.getloadavg(),
    }
    print(
        f"torch {meta['torch']}, threads {meta['threads']}, best of {args.repeats}, malloc {malloc}; {df_note}; "
        f"load average {meta['loadavg'][0]:.2f}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows, "op_counts": ops}, fh, indent=1)


if __name__ == "__main__":
    main()
