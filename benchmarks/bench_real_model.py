"""Real-model costs on the committed digits model: denoiser throughput, the reference, one harness cell.

    python benchmarks/bench_real_model.py [--repeats 5] [--threads 1] [--json out.json]

Reports, per dtype and batch size, the CPU time of one denoiser call (best of the repeats) and samples per second;
the DOP853 reference for 16 start points (model calls, time, its checked accuracy); one Heun cell (N = 32) of the
harness and the share of it spent in the denoiser. On CUDA (--device cuda) it also reports the batch size
`auto_batch` picks. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sdm_verify import schedules, solvers
from sdm_verify.models import load_denoiser
from sdm_verify.models.digits import digits_checkpoint
from sdm_verify.real.distributed import auto_batch, select_device
from sdm_verify.real.harness import start_points
from sdm_verify.real.reference import check_reference


def _clock(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def denoiser_times(model, device, dtype, batches, repeats) -> list[dict]:
    rows = []
    for b in batches:
        x = torch.randn(b, *model.shape, dtype=dtype, device=device)
        model(x, 1.0)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = _clock(device)
            model(x, 1.0)
            best = min(best, _clock(device) - t0)
        rows.append(dict(dtype=str(dtype).replace("torch.", ""), batch=b, ms=1e3 * best, samples_per_s=b / best))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    out: dict = dict(threads=args.threads, device=str(device), torch=torch.__version__)

    rows = []
    for dtype in (torch.float32, torch.float64):
        model = load_denoiser(digits_checkpoint(), device=device, dtype=dtype)
        rows += denoiser_times(model, device, dtype, (1, 16, 64, 256), args.repeats)
    out["denoiser"] = rows
    print("denoiser call (best of repeats):")
    for r in rows:
        print(f"  {r['dtype']:8s} batch {r['batch']:4d}: {r['ms']:8.2f} ms  {r['samples_per_s']:9.0f} samples/s")

    model = load_denoiser(digits_checkpoint(), device=device, dtype=torch.float64)
    if device.type == "cuda":
        out["auto_batch"] = {str(dt): auto_batch(model, device, dt) for dt in (torch.float32, torch.float64)}
        print("auto_batch:", out["auto_batch"])
    x = start_points(model.shape, range(16), 80.0).to(device)
    t0 = time.perf_counter()
    ref = check_reference(model, x, 80.0, 0.002, rtol=1e-9)
    out["reference"] = dict(nfev=ref.nfev, wall_s=time.perf_counter() - t0, estimate=ref.estimate)
    print(f"reference (16 points, rtol 1e-9 + check at 1e-11): {ref.nfev} calls, "
          f"{out['reference']['wall_s']:.1f} s wall, accuracy {ref.estimate:.1e}")

    calls = [0.0]

    def timed(xx, s):
        t = _clock(device)
        try:
            return model(xx, s)
        finally:
            calls[0] += _clock(device) - t

    grid = schedules.get("edm")(32, 0.002, 80.0)
    t0 = _clock(device)
    solvers.get("heun")(timed, x.clone(), grid)
    total = _clock(device) - t0
    out["heun_cell"] = dict(seconds=total, denoiser_share=calls[0] / total)
    print(f"heun N = 32 on 16 points: {total:.2f} s, denoiser {100 * calls[0] / total:.0f}% of it")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
