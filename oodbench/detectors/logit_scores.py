"""Scores computed from logits alone."""

from __future__ import annotations

import torch

from oodbench.detectors.base import LogitDetector


class MSP(LogitDetector):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): S(x) = max_i softmax(f(x))_i."""

    def metric_hints(self) -> dict[str, float]:
        return {"softmax_temperature": 1.0}

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.double(), dim=1).max(dim=1).values


class Energy(LogitDetector):
    """Negative free energy (Liu et al., NeurIPS 2020, Eq. 4): −E(x; f) = T · log Σ_i exp(f_i(x) / T)."""

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"energy temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return t * torch.logsumexp(logits.double() / t, dim=1)


class MaxLogit(LogitDetector):
    """Maximum logit (Hendrycks et al., ICML 2022): S(x) = max_i f_i(x)."""

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.double().max(dim=1).values
