"""ODIN (Liang, Li & Srikant, ICLR 2018).

Temperature scaling (Eq. 1): S_i(x; T) = exp(f_i(x)/T) / Σ_j exp(f_j(x)/T).
Input preprocessing (Eq. 2): x̃ = x − ε · sign(−∇_x log S_ŷ(x; T)), ŷ = argmax_i f_i(x);
score = max_i S_i(x̃; T).

ODIN's code takes the step in normalized input space with the gradient sign divided by the per-channel std.
Our models normalize internally and take pixels in [0, 1], so a pixel-space step of ε is exactly that.
With ε = 0 the score needs logits only and is served from the representation cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oodbench.detectors.base import LogitDetector, ModelDetector


class ODIN(ModelDetector, LogitDetector):
    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014) -> None:
        if temperature <= 0:
            raise ValueError(f"ODIN temperature must be > 0, got {temperature}")
        if epsilon < 0:
            raise ValueError(f"ODIN epsilon must be >= 0, got {epsilon}")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)

    @property
    def consumes(self) -> str:  # type: ignore[override]
        return "model" if self.epsilon > 0 else "logits"

    def metric_hints(self) -> dict[str, float]:
        return {"softmax_temperature": self.temperature}

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.double() / self.temperature, dim=1).max(dim=1).values

    def perturb(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Eq. 2: one signed-gradient step that increases the softmax score of the predicted class."""
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)
        loss = F.cross_entropy(logits / self.temperature, logits.argmax(dim=1))  # = −log S_ŷ(x; T), averaged
        (grad,) = torch.autograd.grad(loss, x)
        return (x - self.epsilon * grad.sign()).detach()

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_tilde = self.perturb(model, x) if self.epsilon > 0 else x
        with torch.no_grad():
            return self.score_logits(model(x_tilde))
