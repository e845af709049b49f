"""diffsolve: sampling from diffusion and flow-matching models, fast, accurate and measured.

    >>> import torch, diffsolve
    >>> gmm = diffsolve.exact_model("gmm-2d")
    >>> res = diffsolve.sample(gmm, torch.randn(8, 2, dtype=torch.float64), solver="dpm++2m", nfe=10)
    >>> res.nfe
    10
"""

from .paths import Path, get_path, PATHS
from .denoisers import Denoiser, DenoiserWrapper, NetworkDenoiser, Thresholded, from_network, PREDICTIONS
from .schedules import make_schedule, SCHEDULES
from .solvers import NFEError, NoiseSource, StabilityWarning, get_solver, list_solvers
from .sample import NonFiniteError, SampleResult, sample
from .hooks import StepContext
from .models.gmm import GaussianMixture, builtin as exact_model
from .models.checkpoint import load
from .guidance import CFG

__version__ = "0.1.0"
from . import solvers  # callable: diffsolve.solvers() lists every solver with its order, NFE rule, paper
from . import steer  # callable: diffsolve.steer(prior, reward, method, ...) samples the tilted target
from . import tune  # callable: diffsolve.tune(denoiser, nfe, shape=...) fits a Plan
from .plan import Plan


__all__ = ["Path", "get_path", "PATHS", "Denoiser", "DenoiserWrapper", "NetworkDenoiser", "Thresholded",
           "from_network", "PREDICTIONS", "make_schedule", "SCHEDULES", "NFEError", "NoiseSource", "get_solver",
           "StabilityWarning", "NonFiniteError", "StepContext", "sample", "SampleResult", "GaussianMixture",
           "exact_model", "solvers", "load", "CFG", "steer", "tune", "Plan"]
