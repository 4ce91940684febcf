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
from dataclasses import dataclass

import torch

from ._checks import DTYPE

__all__ = ["Process", "VE", "VP", "VPCosine", "FlowMatching", "get", "available"]


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=DTYPE)


@dataclass(frozen=True)
class Process:
    """Base class. Subclasses give sigma, s, their t-derivatives and sigma's inverse on [t_min, t_max]."""

    name = "process"
    t_min: float = 0.0
    t_max: float = math.inf

    def sigma(self, t):
        raise NotImplementedError

    def sigma_deriv(self, t):
        raise NotImplementedError

    def scale(self, t):
        raise NotImplementedError

    def scale_deriv(self, t):
        raise NotImplementedError

    def sigma_inv(self, sigma):
        raise NotImplementedError

    def lam(self, t):
        """lambda(t) = -log sigma(t): the half log-SNR."""
        return -torch.log(self.sigma(t))

    def sigma_range(self) -> tuple[float, float]:
        """The noise levels the process reaches on its time domain."""
        return float(self.sigma(self.t_min)), float(self.sigma(self.t_max))

    def drift(self, x, t, denoised):
        """EDM general-form ODE right-hand side dx/dt given D(x/s; sigma) (Karras et al. 2022, Eq. 4)."""
        t = _t(t)
        sig, dsig = self.sigma(t), self.sigma_deriv(t)
        s, ds = self.scale(t), self.scale_deriv(t)
        return (dsig / sig + ds / s) * x - dsig * s / sig * denoised


@dataclass(frozen=True)
class VE(Process):
    name = "ve"
    t_min: float = 0.0
    t_max: float = math.inf

    def sigma(self, t):
        return _t(t).clone()

    def sigma_deriv(self, t):
        return torch.ones_like(_t(t))

    def scale(self, t):
        return torch.ones_like(_t(t))

    def scale_deriv(self, t):
        return torch.zeros_like(_t(t))

    def sigma_inv(self, sigma):
        return _t(sigma).clone()


@dataclass(frozen=True)
class VP(Process):
    """Linear-beta VP: beta(t) = beta_min + beta_d t; EDM's defaults beta_d = 19.9, beta_min = 0.1."""

    name = "vp"
    beta_d: float = 19.9
    beta_min: float = 0.1
    t_min: float = 1e-5
    t_max: float = 1.0

    def _e(self, t):
        t = _t(t)
        return 0.5 * self.beta_d * t**2 + self.beta_min * t

    def sigma(self, t):
        return torch.sqrt(torch.expm1(self._e(t)))

    def sigma_deriv(self, t):
        t = _t(t)
        e = self._e(t)
        return 0.5 * (self.beta_min + self.beta_d * t) * torch.exp(e) / torch.sqrt(torch.expm1(e))

    def scale(self, t):
        return torch.exp(-0.5 * self._e(t))

    def scale_deriv(self, t):
        t = _t(t)
        return -0.5 * (self.beta_min + self.beta_d * t) * torch.exp(-0.5 * self._e(t))

    def sigma_inv(self, sigma):
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

    def _angle(self, t):
        return (_t(t) + self.offset) / (1.0 + self.offset) * (math.pi / 2)

    @property
    def _a0(self) -> float:
        return self.offset / (1.0 + self.offset) * (math.pi / 2)

    def scale(self, t):
        return torch.cos(self._angle(t)) / math.cos(self._a0)

    def scale_deriv(self, t):
        k = (math.pi / 2) / (1.0 + self.offset)
        return -k * torch.sin(self._angle(t)) / math.cos(self._a0)

    def sigma(self, t):
        # sigma^2 = cos^2(a0)/cos^2(a) - 1 = (cos^2 a0 - cos^2 a)/cos^2 a = sin(a - a0) sin(a + a0)/cos^2 a
        a = self._angle(t)
        return torch.sqrt(torch.sin(a - self._a0) * torch.sin(a + self._a0)) / torch.cos(a)

    def sigma_deriv(self, t):
        # d sigma^2/da = 2 cos^2(a0) sin a / cos^3 a;  d sigma/dt = (d sigma^2/da) (da/dt) / (2 sigma)
        a = self._angle(t)
        k = (math.pi / 2) / (1.0 + self.offset)
        return k * math.cos(self._a0) ** 2 * torch.sin(a) / torch.cos(a) ** 3 / self.sigma(t)

    def sigma_inv(self, sigma):
        a = torch.arccos(math.cos(self._a0) / torch.sqrt(1.0 + _t(sigma) ** 2))
        return a / (math.pi / 2) * (1.0 + self.offset) - self.offset


@dataclass(frozen=True)
class FlowMatching(Process):
    """Rectified flow / flow matching: x_t = (1 - t) x0 + t n, so sigma = t/(1-t), s = 1 - t."""

    name = "fm"
    t_min: float = 0.0
    t_max: float = 1.0 - 1e-6

    def sigma(self, t):
        t = _t(t)
        return t / (1.0 - t)

    def sigma_deriv(self, t):
        return 1.0 / (1.0 - _t(t)) ** 2

    def scale(self, t):
        return 1.0 - _t(t)

    def scale_deriv(self, t):
        return -torch.ones_like(_t(t))

    def sigma_inv(self, sigma):
        sigma = _t(sigma)
        return sigma / (1.0 + sigma)


_REGISTRY = {"ve": VE, "vp": VP, "vp-cosine": VPCosine, "fm": FlowMatching}


def available() -> list[str]:
    return list(_REGISTRY)


def get(name: str, **params) -> Process:
    """The process registered under `name` ("ve", "vp", "vp-cosine", "fm")."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"name: unknown process {name!r}; choose from {available()}") from None
    return cls(**params)
