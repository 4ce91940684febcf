"""W2 from samples: the synchronous coupling, exact optimal transport between point clouds, and sliced W2
(docs/theory.md §7 (c), §7 (d), §7 (e)).

    sync_error      (sum_i w_i ||x_num_i - x_ref_i||^2)^{1/2}: the cost of one coupling, an upper bound on W2
    pot_w2          exact OT between two weighted clouds (POT's network simplex; sorting in 1-D), optionally
                    debiased; between samples it floors at the sampling error (Fournier & Guillin 2015)
    sliced_w2       SW2^2 = E_theta W2^2(theta # mu, theta # nu), theta uniform on the sphere (Rabin et al. 2011;
    sliced_w2_gmm   Bonneel et al. 2015): a different, smaller metric, SW2 <= W2 / sqrt(d); against a mixture each
                    slice is exact (`quantile.w2_1d_cloud`)
"""

from __future__ import annotations

import math

import numpy as np
import ot
import torch

from .._checks import DTYPE, as_tensor, check_bool, check_generator, check_int, check_weights
from ..gmm import GaussianMixture
from .quantile import w2_1d_cloud

__all__ = ["sync_error", "pot_w2", "sliced_w2", "sliced_w2_gmm"]


def _cloud(X, name: str) -> torch.Tensor:
    """A (n, d) point cloud; a 1-D array is read as n points in d = 1."""
    X = as_tensor(X, name)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name}: expected shape (n, d), got {tuple(X.shape)}")
    return X


def sync_error(x_num, x_ref, weights=None) -> float:
    """Synchronous-coupling error (sum_i w_i ||x_num_i - x_ref_i||^2)^{1/2} (uniform weights by default).

    x_num and x_ref are (B, d) (or (B,)) outputs from the same inputs, so this is the L2 cost of one particular
    coupling of the two laws: an upper bound on W2 (docs/theory.md §7 (c)), equal to it in 1-D for monotone maps.
    There is deliberately no mean-of-norms version: mean_i ||x_num_i - x_ref_i|| bounds W1, not W2.
    """
    a, b = as_tensor(x_num, "x_num"), as_tensor(x_ref, "x_ref")
    if a.ndim not in (1, 2) or a.shape[0] < 1:
        raise ValueError(f"x_num: expected shape (B, d) or (B,), got {tuple(a.shape)}")
    if b.shape != a.shape:
        raise ValueError(f"x_ref: expected shape {tuple(a.shape)} (as x_num), got {tuple(b.shape)}")
    diff = (a - b).reshape(a.shape[0], -1)
    w = check_weights(weights, a.shape[0], "weights")
    return math.sqrt(float((w * (diff**2).sum(1)).sum()))


def _sqdist(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Squared Euclidean costs from coordinate differences (ot.dist expands ||x||^2 + ||y||^2 - 2 x.y, which
    floors at ~eps ||x||^2 and would hide small errors)."""
    M = np.zeros((X.shape[0], Y.shape[0]))
    for k in range(X.shape[1]):
        M += (X[:, k, None] - Y[None, :, k]) ** 2
    return M


def _emd2(X: torch.Tensor, a: torch.Tensor, Y: torch.Tensor, b: torch.Tensor) -> float:
    """Exact W2^2 between two weighted clouds: ot.emd2_1d in 1-D (sorting), else the network simplex ot.emd2."""
    Xn, Yn, an, bn = X.cpu().numpy(), Y.cpu().numpy(), a.cpu().numpy(), b.cpu().numpy()
    if Xn.shape[1] == 1:
        return float(ot.emd2_1d(Xn[:, 0], Yn[:, 0], an, bn, metric="sqeuclidean"))
    n_iter = max(100_000, 50 * Xn.shape[0] * Yn.shape[0])
    cost, log = ot.emd2(an, bn, _sqdist(Xn, Yn), numItermax=n_iter, log=True)
    if log.get("warning") is not None:
        raise RuntimeError(f"ot.emd2 did not reach optimality: {log['warning']}")
    return float(cost)


def pot_w2(X, Y, a=None, b=None, debias=False, X2=None, Y2=None, *, squared=False) -> float:
    """Exact OT W2 between the empirical measures sum_i a_i delta_{X_i} and sum_j b_j delta_{Y_j} (POT).

    Cost: squared Euclidean distances (from coordinate differences), then ot.emd2 (ot.emd2_1d in d = 1).
    Bias: for independent samples of size n, E W2^2(mu_n, mu) ~ n^{-1/2} (d <= 3), n^{-1/2} log n (d = 4),
    n^{-2/d} (d >= 5) (Fournier & Guillin 2015), so W2 between samples floors at ~n^{-1/4} in d <= 3: far above
    discretization errors. debias=True returns the estimate of W2^2
        W2^2(mu_n, nu_n) - 1/2 W2^2(mu_n, mu'_n) - 1/2 W2^2(nu_n, nu'_n)
    with X2 ~ mu and Y2 ~ nu independent second clouds of the same sizes (weights a and b): it reduces the bias but
    does not remove it, and can be negative (then W2 is reported as 0; squared=True returns the signed estimate).
    Paired-clouds pitfall (docs/theory.md §7 (d)): if Y is X moved by a small error (same inputs x_T), the optimal
    matching is the identity once the errors are below the nearest-neighbour spacing, so this returns the
    synchronous cost (`sync_error`), not W2 between the laws.
    """
    X, Y = _cloud(X, "X"), _cloud(Y, "Y")
    if Y.shape[1] != X.shape[1]:
        raise ValueError(f"Y: expected dimension d = {X.shape[1]} (as X), got shape {tuple(Y.shape)}")
    debias, squared = check_bool(debias, "debias"), check_bool(squared, "squared")
    a, b = check_weights(a, X.shape[0], "a"), check_weights(b, Y.shape[0], "b")
    w2sq = _emd2(X, a, Y, b)
    if debias:
        for name, Z, ref in (("X2", X2, X), ("Y2", Y2, Y)):
            if Z is None:
                raise ValueError(f"{name}: an independent second cloud is required when debias=True")
            if _cloud(Z, name).shape != ref.shape:
                raise ValueError(f"{name}: expected shape {tuple(ref.shape)}, got {tuple(_cloud(Z, name).shape)}")
        w2sq -= 0.5 * (_emd2(X, a, _cloud(X2, "X2"), a) + _emd2(Y, b, _cloud(Y2, "Y2"), b))
    elif X2 is not None or Y2 is not None:
        raise ValueError("X2: second clouds are only used with debias=True")
    return w2sq if squared else math.sqrt(max(w2sq, 0.0))


# ---------------------------------------------------------------------------------------------- sliced W2
def _directions(d: int, n_projections: int, generator, directions) -> torch.Tensor:
    """(P, d) unit vectors: the given rows normalized, or n_projections uniform draws on the sphere."""
    if directions is not None:
        theta = as_tensor(directions, "directions", ndim=2)
        if theta.shape[1] != d or theta.shape[0] < 1:
            raise ValueError(f"directions: expected shape (P, {d}), got {tuple(theta.shape)}")
        norms = theta.norm(dim=1, keepdim=True)
        if (norms == 0).any():
            raise ValueError("directions: rows must be nonzero")
        return theta / norms
    n_projections = check_int(n_projections, "n_projections")
    check_generator(generator)
    theta = torch.randn(n_projections, d, dtype=DTYPE, generator=generator)
    return theta / theta.norm(dim=1, keepdim=True)


def _w2sq_discrete_1d(x: torch.Tensor, a: torch.Tensor, y: torch.Tensor, b: torch.Tensor) -> float:
    """Exact W2^2 between two weighted 1-D clouds: int_0^1 (Q_x(u) - Q_y(u))^2 du over the merged breakpoints."""
    ix, iy = torch.argsort(x), torch.argsort(y)
    x, a, y, b = x[ix], a[ix], y[iy], b[iy]
    ca, cb = torch.cumsum(a, 0), torch.cumsum(b, 0)
    ca[-1] = cb[-1] = 1.0
    c = torch.unique(torch.cat([ca, cb]))  # sorted breakpoints in (0, 1]
    du = torch.diff(c, prepend=c.new_zeros(1))
    mid = c - 0.5 * du
    i = torch.searchsorted(ca, mid).clamp_max(x.shape[0] - 1)
    j = torch.searchsorted(cb, mid).clamp_max(y.shape[0] - 1)
    return float((du * (x[i] - y[j]) ** 2).sum())


def sliced_w2(X, Y, n_projections: int = 256, generator=None, a=None, b=None, *, directions=None) -> float:
    """Sliced W2 between weighted clouds: SW2^2 = E_theta W2^2(theta # mu, theta # nu), theta uniform on the sphere,
    each 1-D W2 exact (sorting); a Monte Carlo average over n_projections directions (or the given `directions`,
    rows normalized; pass the same generator seed or directions to compare runs with common random numbers).

    A different metric from W2: projections are 1-Lipschitz and E (theta . v)^2 = |v|^2 / d, so SW2 <= W2 / sqrt(d).
    Useful to monitor convergence orders; it is not a bound on W2 from above.
    """
    X, Y = _cloud(X, "X"), _cloud(Y, "Y")
    d = X.shape[1]
    if Y.shape[1] != d:
        raise ValueError(f"Y: expected dimension d = {d} (as X), got shape {tuple(Y.shape)}")
    uniform = a is None and b is None and X.shape[0] == Y.shape[0]
    a, b = check_weights(a, X.shape[0], "a"), check_weights(b, Y.shape[0], "b")
    theta = _directions(d, n_projections, generator, directions)
    PX, PY = X @ theta.T, Y @ theta.T  # (n, P), (m, P)
    if uniform:
        sq = ((torch.sort(PX, 0).values - torch.sort(PY, 0).values) ** 2).mean(0)
        return math.sqrt(float(sq.mean()))
    sq = [_w2sq_discrete_1d(PX[:, p], a, PY[:, p], b) for p in range(theta.shape[0])]
    return math.sqrt(sum(sq) / len(sq))


def sliced_w2_gmm(X, gmm, n_projections: int = 256, generator=None, a=None, *, directions=None) -> float:
    """Sliced W2 between a weighted cloud X (n, d) and a Gaussian-mixture law, the target side exact:
    theta # gmm is the 1-D mixture with weights pi_k, means theta^T mu_k and variances theta^T S_k theta, and each
    projected W2 is `w2_1d_cloud` (closed form). Monte Carlo over directions as in `sliced_w2`.

    A different metric from W2 (SW2 <= W2 / sqrt(d)); the cloud's own sampling error remains (~ n^{-1/2} per slice).
    """
    X = _cloud(X, "X")
    try:
        weights, means, covs = gmm.weights, gmm.means, gmm.covariances
    except AttributeError:
        raise ValueError("gmm: expected a GaussianMixture (weights, means, covariances)") from None
    means = as_tensor(means, "gmm")
    if means.ndim != 2 or means.shape[1] != X.shape[1]:
        raise ValueError(f"gmm: means of shape {tuple(means.shape)} do not match X of shape {tuple(X.shape)}")
    a = check_weights(a, X.shape[0], "a")
    theta = _directions(X.shape[1], n_projections, generator, directions)
    pm = means @ theta.T  # (K, P)
    pv = torch.einsum("pi,kij,pj->kp", theta, covs, theta)
    sq = []
    for p in range(theta.shape[0]):
        law = GaussianMixture(weights, pm[:, p, None], pv[:, p, None, None])
        sq.append(w2_1d_cloud(X @ theta[p], law, a) ** 2)
    return math.sqrt(sum(sq) / len(sq))
