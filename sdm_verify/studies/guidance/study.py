"""The guidance study (issue 15): orders, few-step errors, stability boundaries, thresholding, SDM, stochastic
samplers and the CFG-to-tilted gap, on exact guided targets (docs/guidance.md §7-§9).

Matrices:
    quick   euler, heun, dpmpp_2m, dpm_solver_3, unipc, ipndm at w in {1, 3, 7.5} on mix-1d, mix-2d, joint-2d
            (grids to N = 256, or 512 for claimed order >= 3); thresholding for euler and dpmpp_2m at w = 7.5;
            SDM at w in {1, 7.5}; stochastic samplers (every registered one) at w in {1, 3, 7.5}, N in {8, 16, 32};
            the gap at every w of the full matrix on the joint Gaussian, at w in {1, 3, 7.5} on the mixture.
    full    every solver of the theory matrix (harness.cases.matrix_solvers) at w in WS on the three targets (grids
            to N = 512, or 2048 for claimed order >= 3); the rest at every w of its own list.
Store: every cell (one curve, one thresholding pair, one SDM study, one stochastic sampler, one gap row) is written
to a results store as it finishes, keyed by its config and the fingerprint of this package's code and what it
imports (harness.fingerprint): a rerun reuses what is stored for the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ... import solvers
from ...harness import fingerprint
from ...harness.cases import matrix_solvers
from ...harness.progress import Progress
from ...harness.store import ResultStore
from .orders import Curve, grid_ns, measure_curve
from .stability import stability
from .targets import TARGETS, make_meter

STUDY = "guidance/v1"
WS = (1.0, 1.5, 3.0, 5.0, 7.5, 10.0, 15.0)
QUICK_SOLVERS = ("euler", "heun", "dpmpp_2m", "dpm_solver_3", "unipc", "ipndm")
QUICK_WS = (1.0, 3.0, 7.5)


@dataclass
class Results:
    curves: list = field(default_factory=list)
    thresholding: list = field(default_factory=list)
    adaptive: list = field(default_factory=list)
    stochastic: list = field(default_factory=list)
    gap: list = field(default_factory=list)
    quick: bool = True
    seconds: float = 0.0

    def stab(self) -> dict:
        return {(c.solver, c.target, c.w): stability(c) for c in self.curves}

    def to_dict(self) -> dict:
        return {"quick": self.quick, "seconds": self.seconds, "curves": [c.to_dict() for c in self.curves],
                "thresholding": self.thresholding, "adaptive": self.adaptive, "stochastic": self.stochastic,
                "gap": self.gap}


def code() -> dict:
    part = fingerprint.modules_part("guidance", ("sdm_verify.studies.guidance.study",
                                                 "sdm_verify.studies.guidance.thresholding",
                                                 "sdm_verify.studies.guidance.adaptive",
                                                 "sdm_verify.studies.guidance.stochastic",
                                                 "sdm_verify.studies.guidance.gap"), ("sdm_verify", "analytic"))
    return {"guidance": part.digest, **fingerprint.versions()}


def plan(quick: bool = True) -> list[tuple]:
    """The cells: ("curve", solver, target, w) / ("threshold", solver, w) / ("adaptive", target, w) /
    ("stochastic", sampler) / ("gap", w)."""
    names = QUICK_SOLVERS if quick else tuple(matrix_solvers())
    ws = QUICK_WS if quick else WS
    cells = [("curve", s, t, w) for t in TARGETS for w in ws for s in names]
    thr_solvers = ("euler", "dpmpp_2m") if quick else ("euler", "heun", "dpmpp_2m", "dpm_solver_3")
    thr_ws = (7.5,) if quick else (1.0, 3.0, 7.5, 15.0)
    cells += [("threshold", s, w) for w in thr_ws for s in thr_solvers]
    cells += [("adaptive", t, w) for t in TARGETS for w in ((1.0, 7.5) if quick else WS)]
    cells += [("stochastic", s) for s in solvers.available(stochastic=True)]
    cells += [("gap", w) for w in (0.0, *WS)]
    return cells


def compute(cell: tuple, quick: bool) -> dict:
    kind = cell[0]
    if kind == "curve":
        _, s, t, w = cell
        return measure_curve(s, make_meter(t, w), grid_ns(s, quick)).to_dict()
    if kind == "threshold":
        from .thresholding import bias_study
        return bias_study(solvers=(cell[1],), ws=(cell[2],))[0]
    if kind == "adaptive":
        from .adaptive import adaptive_study
        return adaptive_study(make_meter(cell[1], cell[2]))
    if kind == "stochastic":
        from .stochastic import NS_FULL, NS_QUICK, sampler_rows
        return {"rows": sampler_rows(cell[1], ns=NS_QUICK if quick else NS_FULL)}
    if kind == "gap":
        from .gap import gap_rows
        w = cell[1]
        return gap_rows((w,), mixture=(not quick) or w in (1.0, 3.0, 7.5))[0]
    raise ValueError(f"cell: unknown kind {kind!r}")


def run(quick: bool = True, store=None, progress: bool = True) -> Results:
    """Compute (or reuse from `store`: a path or an open ResultStore) every cell of the plan."""
    import time

    torch.set_num_threads(1)
    cells = plan(quick)
    own = store is not None and not isinstance(store, ResultStore)
    db = ResultStore(store) if own else store
    res = Results(quick=quick)
    t0 = time.perf_counter()
    cfg_code = code()
    try:
        with Progress(len(cells), "guidance", enabled=progress) as bar:
            for cell in cells:
                cfg = {"study": STUDY, "cell": list(cell), "quick": quick, "code": cfg_code}
                hit = db.get(cfg) if db is not None else None
                row = hit if hit is not None else compute(cell, quick)
                if hit is None and db is not None:
                    db.put(cfg, row)
                _file(res, cell, row)
                bar.update()
    finally:
        if own:
            db.close()
    res.seconds = time.perf_counter() - t0
    return res


def _file(res: Results, cell: tuple, row: dict) -> None:
    kind = cell[0]
    if kind == "curve":
        res.curves.append(Curve.from_dict(row))
    elif kind == "threshold":
        res.thresholding.append(row)
    elif kind == "adaptive":
        res.adaptive.append(row)
    elif kind == "stochastic":
        res.stochastic += row["rows"]
    else:
        res.gap.append(row)
