"""Output parametrisations that turn a plain network into an x̂-predictor."""

from __future__ import annotations

from torch import Tensor, nn

from ..config import configurable
from ..tensors import bcast

__all__ = ["EpsilonPredictor"]


@configurable
class EpsilonPredictor(nn.Module):
    """x̂_θ(z, t) = (z − σ_t ε̂(z, t)) / α_t: the network predicts the noise ε.

    Why: the continuous negative ELBO weights ‖x − x̂‖² by e^{λ(t)} (up to λ'), which is
    huge near t = 0 (e^12 for λ_max = 12). Predicting x directly then needs x̂ ≈ z/α to
    ~e^{−6} accuracy; predicting ε makes that automatic, and for F = identity the loss
    becomes the well-conditioned −½ λ'(t) ‖ε − ε̂‖². Any x̂ is valid for the NDM bound;
    with a learned F the network also absorbs α_t (F(x, t) − x)/σ_t.

    Args:
        net: ``net(z, t)`` returning z's shape (an ``MLP`` or ``UNet``).
        schedule: the NDM's schedule (pass the same object to ``NDM(schedule=...)``).
    """

    def __init__(self, net: nn.Module, schedule: nn.Module):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be a callable nn.Module, got {type(net).__name__}")
        if not callable(schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self.net = net
        self.schedule = schedule

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = self.schedule(t)
        return (z - bcast(sigma, z) * self.net(z, t)) / bcast(alpha, z)
