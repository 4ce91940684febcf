"""Empirical model statistics (EMS) of DPM-Solver-v3 (Zheng et al. 2023, arXiv 2310.13268): container + estimator.

Variables. The suite works in canonical EDM variables x = x0 + sigma n, D(x, sigma) = E[x0 | x]; DPM-Solver-v3 is
written for x_t = alpha x0 + sigma_t n with lambda = log(alpha/sigma_t) and eps = (x_t - alpha D)/sigma_t. For any
process of that form (VP, VE, ...) put x~ = x_t/alpha and sigma = sigma_t/alpha (the canonical pair): then
lambda = -log sigma, grad_{x_t}(sigma_t eps) = grad_{x~}(sigma eps) = I - grad D and (sigma_t eps - l x_t)/alpha =
sigma eps - l x~ = (1 - l) x~ - D. So the statistics below, as functions of lambda, are the same for every process
(the process only decides which lambda range a grid in its own time t covers); they are computed here with
alpha = 1, lambda = -log sigma (docs/dpm_solver_v3.md §2).

Definitions (paper Sec. 3.1, per coordinate, expectations over the noisy marginal p_sigma):
    l(lambda) = diag E[sigma grad_x eps] = 1 - diag E[grad_x D]     (the l minimising E||grad_x(sigma eps - l x)||_F^2)
    f         = sigma eps - l x = (1 - l) x - D                      (alpha = 1)
    f'        = df/dlambda along the ODE dx/dlambda = D - x: -l' x + (1 - l)(D - x) - dD/dlambda|_ODE
    s         = Cov(f, f')/Var(f),  b = E f' - s E f                 (least squares f' ~ s f + b)
`EMS` holds l, s, b on an increasing lambda grid (shape (G, *F), F the per-sample shape of x) and interpolates them
by piecewise-cubic Lagrange interpolation (4 nearest grid points); `estimate_ems` is the paper's estimator on samples
(App. C.1.1 as summarised in the field notes): Hutchinson (Rademacher) probes for l, a forward-mode JVP of D along the
ODE for f', central differences of l smoothed over +-5 grid points for l', a per-coordinate least-squares fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwad

from ..errors import InputError

F64 = torch.float64
#: relative Var(f) below which s is undetermined (0/0): s = 0, b = E f' there and the coordinate is flagged
DEGENERATE_RTOL = 1e-10
__all__ = ["EMS", "estimate_ems", "least_squares_sb", "DEGENERATE_RTOL"]


def _tensor(value, name: str) -> torch.Tensor:
    if not torch.is_tensor(value):
        try:
            value = torch.as_tensor(value, dtype=F64)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"{name}: expected a real tensor, got {type(value).__name__}") from None
    if value.is_complex() or not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{name}: expected a real floating tensor, got dtype {value.dtype}")
    value = value.detach().to(F64)
    if not bool(torch.isfinite(value).all()):
        raise InputError(f"{name}: contains NaN or inf")
    return value


@dataclass(frozen=True)
class EMS:
    """l, s, b (each (G, *F) float64) on the strictly increasing lambda grid `lambdas` (G,), G >= 4.

    `degenerate` (optional, bool (G, *F)): where Var(f) ~ 0 made s = 0/0 (s = 0 and b = E f' there).
    `stderr` (optional dict of tensors like l): the estimator's standard errors, for confidence intervals;
    `l_prime` (optional): the estimator's dl/dlambda (not used by the solver)."""

    lambdas: torch.Tensor
    l: torch.Tensor
    s: torch.Tensor
    b: torch.Tensor
    degenerate: torch.Tensor | None = None
    stderr: dict = field(default_factory=dict)
    l_prime: torch.Tensor | None = None

    def __post_init__(self):
        lam = _tensor(self.lambdas, "lambdas")
        if lam.ndim != 1 or lam.numel() < 4:
            raise InputError(f"lambdas: expected a 1-D grid of at least 4 points, got shape {tuple(lam.shape)}")
        if not bool((lam[1:] > lam[:-1]).all()):
            raise InputError("lambdas: must be strictly increasing (lambda = -log sigma)")
        object.__setattr__(self, "lambdas", lam)
        shape = None
        for name in ("l", "s", "b"):
            t = _tensor(getattr(self, name), name)
            if t.ndim < 2 or t.shape[0] != lam.numel():
                raise InputError(f"{name}: expected shape ({lam.numel()}, *F) (one row per lambda), got "
                                 f"{tuple(t.shape)}")
            if shape is not None and t.shape != shape:
                raise InputError(f"{name}: shape {tuple(t.shape)} differs from l's {tuple(shape)}")
            shape = t.shape
            object.__setattr__(self, name, t)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.l.shape[1:])

    @property
    def lambda_range(self) -> tuple[float, float]:
        return float(self.lambdas[0]), float(self.lambdas[-1])

    @classmethod
    def degenerated(cls, lambdas, feature_shape) -> EMS:
        """l = 1, s = b = 0 on `lambdas` (the official `degenerated=True`: DPM-Solver++)."""
        lam = _tensor(lambdas, "lambdas")
        shape = (lam.numel(), *tuple(feature_shape))
        return cls(lam, torch.ones(shape, dtype=F64), torch.zeros(shape, dtype=F64), torch.zeros(shape, dtype=F64))

    def interp(self, lams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(l, s, b) at the points `lams` (n,), each (n, *F): cubic Lagrange through the 4 grid points around each
        point's cell (exact on the grid; one-sided at the ends). Points must lie in the grid's range."""
        grid = self.lambdas
        lams = torch.as_tensor(lams, dtype=F64).reshape(-1)
        cell = torch.searchsorted(grid, lams, right=True) - 1
        start = (cell - 1).clamp(0, grid.numel() - 4)
        idx = start[:, None] + torch.arange(4)[None, :]  # (n, 4)
        nodes = grid[idx]
        w = torch.ones(lams.numel(), 4, dtype=F64)
        for j in range(4):
            for m in range(4):
                if m != j:
                    w[:, j] = w[:, j] * (lams - nodes[:, m]) / (nodes[:, j] - nodes[:, m])
        extra = (1,) * len(self.feature_shape)
        out = []
        for t in (self.l, self.s, self.b):
            out.append((w.reshape(*w.shape, *extra) * t[idx]).sum(dim=1))
        return out[0], out[1], out[2]


def least_squares_sb(f: torch.Tensor, fp: torch.Tensor, weights: torch.Tensor | None = None,
                     x: torch.Tensor | None = None):
    """Per-coordinate fit fp ~ s f + b over the first dimension (samples, optional probability weights):
    s = Cov(f, fp)/Var(f), b = E fp - s E f. Returns (s, b, var_f, degenerate): where Var(f) <= DEGENERATE_RTOL *
    (E f^2 + E fp^2 + Var x) (f deterministic, s = 0/0) s = 0 and b = E fp."""
    if weights is None:
        weights = torch.full((f.shape[0],), 1.0 / f.shape[0], dtype=F64)
    w = weights.reshape(-1, *(1,) * (f.ndim - 1))
    mf, mp = (w * f).sum(0), (w * fp).sum(0)
    var = (w * (f - mf) ** 2).sum(0)
    cov = (w * (f - mf) * (fp - mp)).sum(0)
    scale = (w * f**2).sum(0) + (w * fp**2).sum(0)
    if x is not None:
        scale = scale + (w * (x - (w * x).sum(0)) ** 2).sum(0)
    degenerate = var <= DEGENERATE_RTOL * scale
    s = torch.where(degenerate, torch.zeros_like(var), cov / torch.where(degenerate, torch.ones_like(var), var))
    return s, mp - s * mf, var, degenerate


def _jvp(denoiser, x, sigma, tx, tsigma):
    """(D(x, sigma), d/dt D(x + t tx, sigma + t tsigma) at t = 0) by forward-mode AD; sigma as a 0-d tensor."""
    s0 = torch.tensor(float(sigma), dtype=x.dtype)
    with fwad.dual_level():
        out = denoiser(fwad.make_dual(x, tx), fwad.make_dual(s0, torch.full_like(s0, float(tsigma))))
        primal, tangent = fwad.unpack_dual(out)
        return primal.clone(), (torch.zeros_like(x) if tangent is None else tangent.clone())


def _smoothed_derivative(values: torch.Tensor, lams: torch.Tensor, half_width: int) -> torch.Tensor:
    """Central differences (one-sided at the ends) of values (G, *F) in lambda, then a moving average over
    +-half_width grid points (truncated at the ends)."""
    d = torch.empty_like(values)
    d[1:-1] = (values[2:] - values[:-2]) / (lams[2:] - lams[:-2]).reshape(-1, *(1,) * (values.ndim - 1))
    d[0] = (values[1] - values[0]) / (lams[1] - lams[0])
    d[-1] = (values[-1] - values[-2]) / (lams[-1] - lams[-2])
    if half_width == 0:
        return d
    out = torch.empty_like(d)
    for i in range(d.shape[0]):
        out[i] = d[max(0, i - half_width): i + half_width + 1].mean(0)
    return out


def estimate_ems(denoiser, data: torch.Tensor, lambdas, *, generator: torch.Generator | None = None,
                 common_noise: bool = True, smooth: int = 5) -> EMS:
    """The paper's estimator on M samples `data` (M, *F) of x0, on the increasing grid `lambdas`.

    At each lambda, x = x0 + sigma n with n ~ N(0, I) (common_noise=True: the same n and probes at every lambda,
    so the estimates are smooth in lambda; False: fresh draws per grid point). l = 1 - mean(v * J_D v) with one
    Rademacher probe v per sample (Hutchinson, J_D v by a forward-mode JVP of D in x); l' = central differences of
    l smoothed over +-`smooth` points; f = (1 - l) x - D; f' = -l' x + (1 - l)(D - x) - dD/dlambda along the ODE
    (one JVP in the direction (D - x, -sigma)); s, b = least_squares_sb(f, f'). The denoiser must accept a 0-d
    tensor sigma under forward-mode AD. Standard errors (stderr): l: std(v * J v)/sqrt(M); s: the regression
    slope's sqrt(Var(residual)/((M - 2) Var f)); b: sqrt(Var(residual)/M + (E f)^2 se_s^2)."""
    data = _tensor(data, "data")
    if data.ndim < 2 or data.shape[0] < 3:
        raise InputError(f"data: expected at least 3 samples of shape (M, *F), got {tuple(data.shape)}")
    lam = _tensor(lambdas, "lambdas")
    if lam.ndim != 1 or lam.numel() < 4 or not bool((lam[1:] > lam[:-1]).all()):
        raise InputError("lambdas: expected a strictly increasing 1-D grid of at least 4 points")
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 0:
        raise InputError(f"smooth: must be a non-negative integer (got {smooth!r})")
    if not isinstance(common_noise, bool):
        raise InputError(f"common_noise: must be a bool (got {common_noise!r})")
    m = data.shape[0]

    def draws():
        n = torch.randn(data.shape, dtype=F64, generator=generator)
        v = torch.randint(0, 2, data.shape, generator=generator).to(F64) * 2 - 1
        return n, v

    n, v = draws()
    rows = {"l": [], "l_se": [], "x": [], "d": [], "dd": []}
    for lam_i in lam.tolist():
        if not common_noise:
            n, v = draws()
        sigma = math.exp(-lam_i)
        x = data + sigma * n
        d, jv = _jvp(denoiser, x, sigma, v, 0.0)
        z = v * jv
        rows["l"].append(1.0 - z.mean(0))
        rows["l_se"].append(z.std(0) / math.sqrt(m))
        _, dd = _jvp(denoiser, x, sigma, d - x, -sigma)  # dD/dlambda along dx/dlambda = D - x, dsigma/dlambda
        rows["x"].append(x)
        rows["d"].append(d)
        rows["dd"].append(dd)
    l = torch.stack(rows["l"])
    lp = _smoothed_derivative(l, lam, smooth)
    s_rows, b_rows, deg_rows, se_s, se_b = [], [], [], [], []
    for i in range(lam.numel()):
        x, d = rows["x"][i], rows["d"][i]
        f = (1 - l[i]) * x - d
        fp = -lp[i] * x + (1 - l[i]) * (d - x) - rows["dd"][i]
        s, b, var, deg = least_squares_sb(f, fp, x=x)
        resid = fp - s * f - b
        rv = resid.pow(2).mean(0)
        ses = torch.sqrt(rv / ((m - 2) * torch.where(deg, torch.ones_like(var), var)))
        s_rows.append(s)
        b_rows.append(b)
        deg_rows.append(deg)
        se_s.append(torch.where(deg, torch.zeros_like(ses), ses))
        se_b.append(torch.sqrt(rv / m + f.mean(0) ** 2 * se_s[-1] ** 2))
    stderr = {"l": torch.stack(rows["l_se"]), "s": torch.stack(se_s), "b": torch.stack(se_b)}
    return EMS(lam, l, torch.stack(s_rows), torch.stack(b_rows), torch.stack(deg_rows), stderr, lp)
