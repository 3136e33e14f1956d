"""ndmsolve: Neural Diffusion Models with learned forward processes, solvers and likelihoods."""
from .schedules import CosineLogSNR, LearnedLogSNR, LinearLogSNR, Schedule
from .transforms import IdentityTransform, ResidualTransform, TimeBasisTransform
from .process import NDM, NDMFields
from .analytic import AffineTimeTransform, ExactPredictor, GaussianMixture

__version__ = "0.1.0"
from .objectives import NegELBO, continuous_loss, discrete_loss, sample_times, prior_loss, reconstruction_loss
from . import data, fields  # toy/image data and plug-in networks
from .fields import MLP, UNet, EpsilonPredictor
from .likelihood import BPDResult, LikelihoodResult, bits_per_dim, divergence, elbo_bits_per_dim, log_likelihood
from .solvers import NonFiniteError, Solution, SolverError, StepLimitError, solve
from .sampling import sample, SampleResult, make_time_grid
from .config import configurable
from .checkpoint import CheckpointError, load_model
