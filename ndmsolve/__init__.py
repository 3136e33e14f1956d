"""ndmsolve: Neural Diffusion Models with learned forward processes, solvers and likelihoods."""
from .schedules import CosineLogSNR, LearnedLogSNR, LinearLogSNR, Schedule
from .transforms import IdentityTransform, ResidualTransform, TimeBasisTransform
from .process import NDM, NDMFields
from .analytic import AffineTimeTransform, ExactPredictor, GaussianMixture

__version__ = "0.1.0"
