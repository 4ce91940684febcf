"""Real pretrained image denoisers behind one interface: `load_denoiser(path) -> Denoiser`, D(x; sigma) in EDM
variables (x = x0 + sigma n), for the project's own checkpoints, diffusers UNet2DModel directories and NVlabs
EDM/EDM2 pickles. diffusers is imported only when a diffusers checkpoint is loaded."""

from .base import Denoiser, LabelledDenoiser, ModelError, float64_compute
from .load import detect_format, load_denoiser, shipped
from .nvlabs import UntrustedPickleError
from .own import save_denoiser

__all__ = ["Denoiser", "LabelledDenoiser", "ModelError", "UntrustedPickleError", "float64_compute",
           "detect_format", "load_denoiser", "save_denoiser", "shipped"]
