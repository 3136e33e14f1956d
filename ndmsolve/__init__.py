"""ndmsolve: Neural Diffusion Models with learned forward processes, solvers and likelihoods.

Public modules (attributes of the package): ``solvers`` (``solve`` and its methods),
``fields`` (plug-in networks), ``data`` (toy and image data), ``metrics`` (sample
metrics), ``viz`` (plots, loaded on first use), ``objectives``, ``likelihood``,
``sampling``, ``train``, ``time_proposal`` (importance sampling of t); ``load_model``
rebuilds a model from any checkpoint ndmsolve wrote; ``from_diffusers``,
``diffusers_grid`` and ``DiscreteSchedule`` bring in a diffusers model (optional extra).
"""

from . import data, fields, metrics, solvers, time_proposal, train
from .analytic import AffineTimeTransform, ExactPredictor, GaussianMixture
from .checkpoint import CheckpointError, load_model
from .config import configurable
from .diffusers import DiffusersPredictor, diffusers_grid, from_diffusers
from .fields import MLP, EpsilonPredictor, UNet
from .likelihood import (
    BPDResult,
    LikelihoodResult,
    bits_per_dim,
    divergence,
    elbo_bits_per_dim,
    log_likelihood,
)
from .objectives import (
    NegELBO,
    continuous_loss,
    discrete_loss,
    prior_loss,
    reconstruction_loss,
    sample_times,
)
from .process import NDM, NDMFields
from .sampling import SampleResult, make_time_grid, sample, sampling_methods
from .schedules import CosineLogSNR, LearnedLogSNR, LinearLogSNR, Schedule
from .schedules_discrete import DiscreteSchedule
from .solvers import NonFiniteError, Solution, SolverError, StepLimitError, solve
from .transforms import IdentityTransform, ResidualTransform, TimeBasisTransform
from .version import __version__


def __getattr__(name):
    # viz imports matplotlib: loaded on first use, not with the package
    if name == "viz":
        import importlib

        return importlib.import_module(".viz", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
