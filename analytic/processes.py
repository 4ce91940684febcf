"""Noise processes in EDM's general form x_t = s(t) (x0 + sigma(t) n), n ~ N(0, I).

Karras et al. 2022 (EDM), Table 1 and Eq. (4): the PF-ODE in these variables is
    dx/dt = (sigma'(t)/sigma(t) + s'(t)/s(t)) x - sigma'(t) s(t)/sigma(t) D(x/s(t); sigma(t)).
In canonical variables x~ = x/s the ODE is the VE/EDM one, dx~/dsigma = (x~ - D(x~; sigma))/sigma,
for every process; processes differ only in how t maps to sigma and in the scale s.

    ve         sigma = t,                             s = 1
    vp         sigma = sqrt(expm1(beta_d t^2/2 + beta_min t)), s = 1/sqrt(1 + sigma^2)  (linear beta; Song et al. 2021)
    vp-cosine  alpha_bar = cos^2((t+c)/(1+c) pi/2) / cos^2(c/(1+c) pi/2), sigma = sqrt(1/alpha_bar - 1),
               s = sqrt(alpha_bar)                                                  (Nichol & Dhariwal 2021)
    fm         sigma = t/(1-t),                        s = 1 - t     (rectified flow: x_t = (1-t) x0 + t n)

lambda(t) = -log sigma(t) is the half log-SNR log(alpha/sigma_t) of every process.
Derivatives are closed forms; tests check them against finite differences and sympy.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
import torch

from ._checks import DTYPE, as_tensor

__all__ = ["Process", "VE", "VP", "VPCosine", "FlowMatching", "get", "available"]


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=DTYPE)


#: relative slack at the top of the time and sigma domains: sigma_inv of the process's own sigma range can land a
#: few ulps beyond t_max (schedules compute their end times that way)
_SLACK = 1e-9


def _value(x, name: str, proc: str):
    """x as a float (scalar fast path) or a float64 tensor, after the type and finiteness checks; (value, lo, hi)."""
    if type(x) is float or type(x) is int:
        v = float(x)
        return x, v, v
    if isinstance(x, torch.Tensor) and x.ndim == 0 and x.dtype == DTYPE and not x.is_meta:
        v = float(x.detach())
        return x, v, v
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{name}: expected a real number, got bool {x!r} (process {proc!r})")
    if isinstance(x, numbers.Real):
        v = float(x)
        return x, v, v
    try:
        t = as_tensor(x, name)
    except ValueError as exc:
        msg = str(exc)
        if msg.endswith("contains NaN or inf"):
            raise ValueError(f"{name}: must be finite, got NaN or inf (process {proc!r})") from None
        raise ValueError(f"{msg} (process {proc!r})") from None
    if t.numel() == 0:
        return t, 0.0, 0.0
    lo, hi = torch.aminmax(t.detach())
    return t, float(lo), float(hi)


@dataclass(frozen=True)
class Process:
    """Base class. Subclasses give sigma, s, their t-derivatives and sigma's inverse (as _sigma, _scale, ...).

    The public methods check their argument first: a real number or a tensor/array of them (not bool, complex or
    NaN/inf), a time t in the domain [0, t_max] and a noise level sigma in [0, sigma(t_max)] (up to a relative
    _SLACK at the top). t_min is the conventional lower end of a schedule (`sigma_range`); times in [0, t_min]
    are valid (sigma_inv(0) = 0 ends a sampler's run). Refusals are ValueErrors naming the argument, the process
    and its domain.
    """

    name = "process"
    t_min: float = 0.0
    t_max: float = math.inf

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v):
                raise ValueError(f"{f.name}: must be a real number, got {v!r} (process {self.name!r})")
            if f.name != "t_max" and not math.isfinite(v):
                raise ValueError(f"{f.name}: must be finite, got {v!r} (process {self.name!r})")
            if v < 0:
                raise ValueError(f"{f.name}: must be >= 0, got {v!r} (process {self.name!r})")
        if not self.t_min < self.t_max:
            raise ValueError(f"t_max: must exceed t_min = {self.t_min}, got {self.t_max} (process {self.name!r})")
        if self.t_max > self._t_limit or (self.t_max == self._t_limit and self._t_limit < math.inf):
            raise ValueError(f"t_max: must be below {self._t_limit} for process {self.name!r}, got {self.t_max}")

    #: the process is defined for t < _t_limit (an open end where sigma reaches infinity)
    _t_limit = math.inf
    #: times down to -_t_low_slack are accepted: an inexact sigma_inv(0) rounds to a tiny negative t
    _t_low_slack = 0.0

    @cached_property
    def _sigma_top(self) -> float:
        return float(self._sigma(_t(self.t_max)))

    def _check_t(self, t, name: str = "t"):
        t, lo, hi = _value(t, name, self.name)
        if not (lo >= -self._t_low_slack and hi <= self.t_max * (1 + _SLACK)):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"{name}: must be finite, got {lo if not math.isfinite(lo) else hi} "
                                 f"(process {self.name!r}, domain [0, {self.t_max}])")
            bad = lo if lo < -self._t_low_slack else hi
            raise ValueError(f"{name}: {bad} is outside the domain [0, {self.t_max}] of process {self.name!r}")
        return t

    def _check_sigma(self, sigma, name: str = "sigma"):
        sigma, lo, hi = _value(sigma, name, self.name)
        top = self._sigma_top
        if not (lo >= 0 and hi <= top * (1 + _SLACK)):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"{name}: must be finite, got {lo if not math.isfinite(lo) else hi} "
                                 f"(process {self.name!r}, sigma range [0, {top:.6g}])")
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: {bad} is outside the sigma range [0, {top:.6g}] of process {self.name!r} "
                             f"(t in [0, {self.t_max}])")
        return sigma

    def sigma(self, t):
        """sigma(t) for t in [0, t_max]."""
        return self._sigma(self._check_t(t))

    def sigma_deriv(self, t):
        """d sigma / dt for t in [0, t_max] (infinite at t = 0 where sigma ~ sqrt(t))."""
        return self._sigma_deriv(self._check_t(t))

    def scale(self, t):
        """s(t) for t in [0, t_max]."""
        return self._scale(self._check_t(t))

    def scale_deriv(self, t):
        """ds/dt for t in [0, t_max]."""
        return self._scale_deriv(self._check_t(t))

    def sigma_inv(self, sigma):
        """The t with sigma(t) = sigma, for sigma in [0, sigma(t_max)]."""
        return self._sigma_inv(self._check_sigma(sigma))

    def lam(self, t):
        """lambda(t) = -log sigma(t): the half log-SNR (+inf at sigma = 0)."""
        return -torch.log(self.sigma(t))

    def sigma_range(self) -> tuple[float, float]:
        """The noise levels the process reaches on its time domain."""
        return float(self._sigma(_t(self.t_min))), float(self._sigma(_t(self.t_max)))

    def drift(self, x, t, denoised):
        """EDM general-form ODE right-hand side dx/dt given D(x/s; sigma) (Karras et al. 2022, Eq. 4)."""
        t = _t(self._check_t(t))
        x, denoised = as_tensor(x, "x"), as_tensor(denoised, "denoised")
        if denoised.shape != x.shape:
            raise ValueError(f"denoised: expected shape {tuple(x.shape)} (as x), got {tuple(denoised.shape)}")
        sig, dsig = self._sigma(t), self._sigma_deriv(t)
        s, ds = self._scale(t), self._scale_deriv(t)
        return (dsig / sig + ds / s) * x - dsig * s / sig * denoised


@dataclass(frozen=True)
class VE(Process):
    name = "ve"
    t_min: float = 0.0
    t_max: float = math.inf

    def _sigma(self, t):
        return _t(t).clone()

    def _sigma_deriv(self, t):
        return torch.ones_like(_t(t))

    def _scale(self, t):
        return torch.ones_like(_t(t))

    def _scale_deriv(self, t):
        return torch.zeros_like(_t(t))

    def _sigma_inv(self, sigma):
        return _t(sigma).clone()


@dataclass(frozen=True)
class VP(Process):
    """Linear-beta VP: beta(t) = beta_min + beta_d t; EDM's defaults beta_d = 19.9, beta_min = 0.1."""

    name = "vp"
    beta_d: float = 19.9
    beta_min: float = 0.1
    t_min: float = 1e-5
    t_max: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.beta_d + self.beta_min == 0:
            raise ValueError("beta_d: beta_d and beta_min must not both be 0 (process 'vp')")
        if not math.isfinite(self.t_max):
            raise ValueError(f"t_max: must be finite for process 'vp', got {self.t_max}")

    def _e(self, t):
        t = _t(t)
        return 0.5 * self.beta_d * t**2 + self.beta_min * t

    def _sigma(self, t):
        return torch.sqrt(torch.expm1(self._e(t)))

    def _sigma_deriv(self, t):
        t = _t(t)
        e = self._e(t)
        return 0.5 * (self.beta_min + self.beta_d * t) * torch.exp(e) / torch.sqrt(torch.expm1(e))

    def _scale(self, t):
        return torch.exp(-0.5 * self._e(t))

    def _scale_deriv(self, t):
        t = _t(t)
        return -0.5 * (self.beta_min + self.beta_d * t) * torch.exp(-0.5 * self._e(t))

    def _sigma_inv(self, sigma):
        # beta_d t^2/2 + beta_min t = log(1 + sigma^2), positive root, written without cancellation.
        ell = torch.log1p(_t(sigma) ** 2)
        return 2.0 * ell / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * self.beta_d * ell))


@dataclass(frozen=True)
class VPCosine(Process):
    """Cosine VP (Nichol & Dhariwal 2021) with offset c = 0.008; sigma -> inf as t -> 1."""

    name = "vp-cosine"
    offset: float = 0.008
    t_min: float = 0.0
    t_max: float = 0.999
    _t_limit = 1.0
    _t_low_slack = 1e-13  # sigma_inv(0) = arccos(cos a0) ... rounds to ~ -2e-15

    def _angle(self, t):
        return (_t(t) + self.offset) / (1.0 + self.offset) * (math.pi / 2)

    @property
    def _a0(self) -> float:
        return self.offset / (1.0 + self.offset) * (math.pi / 2)

    def _scale(self, t):
        return torch.cos(self._angle(t)) / math.cos(self._a0)

    def _scale_deriv(self, t):
        k = (math.pi / 2) / (1.0 + self.offset)
        return -k * torch.sin(self._angle(t)) / math.cos(self._a0)

    def _sigma(self, t):
        # sigma^2 = cos^2(a0)/cos^2(a) - 1 = (cos^2 a0 - cos^2 a)/cos^2 a = sin(a - a0) sin(a + a0)/cos^2 a
        a = self._angle(t)
        return torch.sqrt(torch.sin(a - self._a0) * torch.sin(a + self._a0)) / torch.cos(a)

    def _sigma_deriv(self, t):
        # d sigma^2/da = 2 cos^2(a0) sin a / cos^3 a;  d sigma/dt = (d sigma^2/da) (da/dt) / (2 sigma)
        a = self._angle(t)
        k = (math.pi / 2) / (1.0 + self.offset)
        return k * math.cos(self._a0) ** 2 * torch.sin(a) / torch.cos(a) ** 3 / self._sigma(t)

    def _sigma_inv(self, sigma):
        a = torch.arccos(math.cos(self._a0) / torch.sqrt(1.0 + _t(sigma) ** 2))
        return a / (math.pi / 2) * (1.0 + self.offset) - self.offset


@dataclass(frozen=True)
class FlowMatching(Process):
    """Rectified flow / flow matching: x_t = (1 - t) x0 + t n, so sigma = t/(1-t), s = 1 - t."""

    name = "fm"
    t_min: float = 0.0
    t_max: float = 1.0 - 1e-6
    _t_limit = 1.0

    def _sigma(self, t):
        t = _t(t)
        return t / (1.0 - t)

    def _sigma_deriv(self, t):
        return 1.0 / (1.0 - _t(t)) ** 2

    def _scale(self, t):
        return 1.0 - _t(t)

    def _scale_deriv(self, t):
        return -torch.ones_like(_t(t))

    def _sigma_inv(self, sigma):
        sigma = _t(sigma)
        return sigma / (1.0 + sigma)


_REGISTRY = {"ve": VE, "vp": VP, "vp-cosine": VPCosine, "fm": FlowMatching}


def available() -> list[str]:
    return list(_REGISTRY)


def get(name: str, **params) -> Process:
    """The process registered under `name` ("ve", "vp", "vp-cosine", "fm")."""
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"name: unknown process {name!r}; choose from {available()}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"params: process {name!r} has no parameter {', '.join(unknown)} (known: {known})")
    return cls(**params)
