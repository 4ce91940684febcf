"""Adapters: outside solvers (k-diffusion samplers, diffusers schedulers, specs) behind the solver interface."""
