"""Exact log-likelihoods along the probability-flow ODE, and bits per dimension.

Three modules: :mod:`~ndmsolve.likelihood.divergence` (the exact trace and Hutchinson's
estimate of ∇·v), :mod:`~ndmsolve.likelihood.ode` (:func:`log_likelihood`, the PF-ODE
integrated with its divergence) and :mod:`~ndmsolve.likelihood.bits` (8-bit data:
dequantised bits/dim and the ELBO in bits/dim). Everything is re-exported here.
"""

from .bits import (
    DATA_HIGH,
    DATA_LOW,
    ELBO_BIN_HALF_RANGE,
    LOG_JACOBIAN_PER_DIM,
    N_BINS,
    BPDResult,
    ELBOBPDResult,
    bits_per_dim,
    dequantize,
    elbo_bits_per_dim,
)
from .divergence import (
    MAX_EXACT_DIM,
    NOISES,
    TRACES,
    Divergence,
    DivergenceFallbackWarning,
    Velocity,
    divergence,
    sample_probes,
)
from .ode import LOG_2PI, AugmentedField, LikelihoodResult, log_likelihood, standard_normal_logp

__all__ = [
    "divergence",
    "sample_probes",
    "log_likelihood",
    "LikelihoodResult",
    "bits_per_dim",
    "BPDResult",
    "elbo_bits_per_dim",
    "ELBOBPDResult",
    "DivergenceFallbackWarning",
    "N_BINS",
    "DATA_LOW",
    "DATA_HIGH",
    "LOG_JACOBIAN_PER_DIM",
    "TRACES",
    "NOISES",
    "Divergence",
    "AugmentedField",
    "standard_normal_logp",
    "dequantize",
]
