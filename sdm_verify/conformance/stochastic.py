"""The conformance check of a stochastic sampler (needs_noise): `check(loaded, claimed_weak=None, ...)`.

Items (docs/stochastic.md §4), each judged ("pass" / "fail"), reported ("info") or not applicable ("n/a"):

    weak_order     the weak order fitted on the exact W2 of the output law to p_sigma_min on gauss-4d (probe columns,
                   EDM grids N = 16..256): judged against the claim (given, or the sampler's `weak_order`) within
                   0.2, the theory rule; reported when nothing is claimed.
    exact_law      W2 to p_sigma_min must keep shrinking (each doubling of N at most 0.75x) for a sampler that claims
                   convergence; for one that claims nothing (a heuristic) the W2 at the finest N is its stated bias.
                   The full sampler's W2 to p_0 (grid into 0) is reported beside it.
    strong_order   where a strong order is claimed: the RMS distance to torchsde's SRK reference on the same Brownian
                   motion (the reverse SDE with beta(t) = 1/t), judged within 0.2.
    mixture_weak   the weak error on the 1-D mixture gmm-1d through exact moments (coupled Brownian paths, Monte Carlo
                   floor stated): reported, with the order fitted above 3 standard errors.
    nfe            counted denoiser calls per run against the declared nfe(n).
    reproducible   the same seeded noise source gives the bitwise-same output; another seed a different one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..harness import targets
from ..harness.noise import GaussianNoise
from ..harness.progress import Progress
from ..harness.stochastic import strong, weak_gaussian, weak_mixture
from .result import Item, Judged, _format

ITEMS = ("weak_order", "exact_law", "strong_order", "mixture_weak", "nfe", "reproducible")
NS, QUICK_NS = (16, 32, 64, 128, 256), (16, 32, 64, 128)
TOL = 0.2
CONVERGING = 0.75


@dataclass
class StochasticResult(Judged):
    spec: str
    name: str
    claimed_weak: float | None
    claimed_strong: float | None
    items: dict
    config: dict | None = None

    @property
    def claimed_order(self) -> float | None:
        """The weak order judged (the pytest plugin's failure text reads `claimed_order`)."""
        return self.claimed_weak

    def to_json(self) -> dict:
        return dict(solver=self.name, spec=self.spec, config=self.config, stochastic=True,
                    claimed_weak_order=self.claimed_weak, claimed_strong_order=self.claimed_strong,
                    items=[i.to_dict() for i in self.items.values()],
                    measurements={n: i.data for n, i in self.items.items()}, failed=self.failed,
                    verdict=self.verdict)

    def table(self) -> str:
        def fmt(v):
            return "none" if v is None else f"{v:g}"

        head = (f"stochastic sampler {self.name}: claimed weak order {fmt(self.claimed_weak)}, strong order "
                f"{fmt(self.claimed_strong)}")
        rows = [[i.name, i.status, i.value, i.limit, i.detail] for i in self.items.values()]
        tail = f"VERDICT: {self.verdict.upper()}" + (f" (failed: {', '.join(self.failed)})" if self.failed else "")
        return "\n".join([head, "", _format(["item", "status", "value", "limit", "detail"], rows), "", tail])


def _errors(es) -> str:
    return ", ".join(f"{e:.3g}" for e in es)


def _weak(sampler, claim, ns, gauss) -> tuple[Item, Item, object]:
    m = weak_gaussian(sampler, gauss, ns=ns, target_name="gauss-4d")
    data = dict(target="gauss-4d", ns=m.ns, nfe=m.nfe, w2_to_sigma_min=m.errors, w2_to_zero=m.extra["w2_to_zero"],
                fit=m.fit.to_dict(), floor=m.floor)
    measured = f"{m.order:.2f} [{m.fit.ci[0]:.2f}, {m.fit.ci[1]:.2f}]" if m.fit.ok else "no window"
    detail = f"exact W2 to p_0.002 at N={m.ns[0]}..{m.ns[-1]}: {_errors(m.errors)}"
    if claim is None:
        weak = Item("weak_order", "info", measured, "no claim", detail, data)
    else:
        ok = m.fit.ok and abs(m.order - claim) <= TOL
        weak = Item("weak_order", "pass" if ok else "fail", measured, f"claimed {claim:g} +- {TOL}",
                    detail if ok or m.fit.ok else f"{detail}; {m.fit.reason}", data)
    ratios = [b / a for a, b in zip(m.errors[:-1], m.errors[1:], strict=True)]
    law = dict(ratios=ratios, w2_finest=m.errors[-1], w2_to_zero_finest=m.extra["w2_to_zero"][-1], n=m.ns[-1])
    tail = f"W2 to p_0 (full sampler) at N={m.ns[-1]}: {m.extra['w2_to_zero'][-1]:.3g}"
    if claim is None:
        converging = all(r <= CONVERGING for r in ratios[-2:])
        exact = Item("exact_law", "info", "-> 0" if converging else f"bias ~ {m.errors[-1]:.3g}",
                     "no convergence claimed", f"W2 to p_0.002 {m.errors[-1]:.3g} at N={m.ns[-1]}, ratios per doubling "
                     f"{_errors(ratios[-2:])}" + ("" if converging else " (stopped shrinking)") + f"; {tail}", law)
    else:
        ok = all(r <= CONVERGING for r in ratios[-2:])
        exact = Item("exact_law", "pass" if ok else "fail", f"{m.errors[-1]:.3g}",
                     f"-> 0 (<= {CONVERGING}x per doubling)",
                     f"ratios per doubling {_errors(ratios)}; {tail}" if ok else
                     f"W2 stops shrinking (ratios {_errors(ratios[-2:])}): the limit law is not the target; {tail}",
                     law)
    return weak, exact, m


def _strong(sampler, claim, ns, gauss) -> Item:
    if claim is None:
        return Item("strong_order", "n/a", "—", "no claim", "no strong order claimed")
    m = strong(sampler, gauss, ns=ns, paths=64, target_name="gauss-4d")
    data = dict(target="gauss-4d", ns=m.ns, nfe=m.nfe, rms=m.errors, reference_floor=m.floor, fit=m.fit.to_dict())
    ok = m.fit.ok and abs(m.order - claim) <= TOL
    measured = f"{m.order:.2f}" if m.fit.ok else "no window"
    return Item("strong_order", "pass" if ok else "fail", measured, f"claimed {claim:g} +- {TOL}",
                f"RMS to the SRK reference (floor {m.floor:.2g}): {_errors(m.errors)}", data)


def _mixture(sampler, ns) -> Item:
    m = weak_mixture(sampler, targets.get("gmm-1d"), ns=ns, paths=16384, target_name="gmm-1d")
    data = dict(target="gmm-1d", ns=m.ns, nfe=m.nfe, errors=m.errors, differences=m.extra["differences"],
                difference_floors=m.extra["difference_floors"], mc_floor=m.floor, fit=m.fit.to_dict())
    measured = f"{m.order:.2f} [{m.fit.ci[0]:.2f}, {m.fit.ci[1]:.2f}]" if m.fit.ok else "no window"
    return Item("mixture_weak", "info", measured, "reported",
                f"moment error (features scaled) {_errors(m.errors)}; Monte Carlo floor {m.floor:.2g}"
                + ("" if m.fit.ok else f"; {m.fit.reason}"), data)


def _nfe(sampler, weak) -> Item:
    declared = getattr(sampler, "nfe", None)
    counted = [n // 1 for n in weak.nfe]
    if not callable(declared):
        return Item("nfe", "info", f"{counted[-1]} at N={weak.ns[-1]}", "undeclared", "counted per run", {})
    try:
        expected = [declared(n) for n in weak.ns]
    except Exception as exc:  # noqa: BLE001  an unreadable declaration fails the item
        return Item("nfe", "fail", "—", "a readable nfe(n)", f"nfe(n) raised {exc}", {})
    if expected[0] is None:
        return Item("nfe", "info", f"{counted[-1]} at N={weak.ns[-1]}", "undeclared", "counted per run", {})
    ok = counted == expected
    return Item("nfe", "pass" if ok else "fail", f"{counted[-1]} at N={weak.ns[-1]}", "= declared nfe(n)",
                f"counted {counted}, declared {expected}", dict(ns=weak.ns, counted=counted, declared=expected))


def _reproducible(sampler, gauss) -> Item:
    x = gauss.sample(16, sigma=80.0, generator=torch.Generator().manual_seed(0))
    sig = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.002], dtype=torch.float64)
    a = sampler(gauss.denoiser, x.clone(), sig, GaussianNoise(x, seed=1))
    b = sampler(gauss.denoiser, x.clone(), sig, GaussianNoise(x, seed=1))
    c = sampler(gauss.denoiser, x.clone(), sig, GaussianNoise(x, seed=2))
    same, differs = bool(torch.equal(a, b)), not bool(torch.equal(a, c))
    ok = same and differs
    return Item("reproducible", "pass" if ok else "fail", "identical" if same else "differs",
                "same seed: bitwise equal; other seed: different",
                "replayed exactly" if ok else ("the same noise gave different outputs" if not same else
                                               "another seed gave the same output: the noise is not used"),
                dict(same_seed_equal=same, other_seed_differs=differs))


def check(loaded, claimed_weak: float | None = None, config: dict | None = None, *, quick: bool = False,
          progress: bool = True) -> StochasticResult:
    """Every stochastic item on `loaded` (adapters.spec.LoadedSolver whose solver declares needs_noise)."""
    sampler = loaded.solver
    claim = claimed_weak if claimed_weak is not None else getattr(sampler, "weak_order", None)
    strong_claim = getattr(sampler, "strong_order", None)
    for value in (claim, strong_claim):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"claimed order: must be a positive number (got {value!r})")
    ns = QUICK_NS if quick else NS
    gauss = targets.get("gauss-4d")
    steps = ["weak", "strong", "mixture", "reproducible"]
    items = {}
    with Progress(len(steps), f"validate {loaded.name}", enabled=progress) as pb:
        items["weak_order"], items["exact_law"], weak = _weak(sampler, claim, ns, gauss)
        pb.update()
        items["strong_order"] = _strong(sampler, strong_claim, ns, gauss)
        pb.update()
        items["mixture_weak"] = _mixture(sampler, ns)
        pb.update()
        items["nfe"] = _nfe(sampler, weak)
        items["reproducible"] = _reproducible(sampler, gauss)
        pb.update()
    return StochasticResult(loaded.spec, loaded.name, claim, strong_claim, {n: items[n] for n in ITEMS}, config)
