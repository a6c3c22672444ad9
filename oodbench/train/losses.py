"""Training losses of the outlier-exposure family, as pure functions of logits (computed in float32).

* Energy-bounded fine-tuning (Liu et al., NeurIPS 2020, Eq. 9), with the free energy E(x) = -logsumexp_i f_i(x)
  (T = 1):  L_energy = E_in[max(0, E(x_in) - m_in)^2] + E_out[max(0, m_out - E(x_out))^2].
* Outlier Exposure (Hendrycks et al., ICLR 2019): cross-entropy from the softmax to the uniform distribution,
  averaged over outliers:  L_OE = -mean_x (1/C) sum_c log softmax_c(f(x)).
* Maximum Classifier Discrepancy (Yu & Aizawa, ICCV 2019): two heads F1, F2 on one feature extractor. Training
  discrepancy = difference of the heads' mean entropies on unlabelled data, d = mean_x [H(p1(x)) - H(p2(x))]
  (signed: head 1 is pushed towards high entropy, head 2 towards low), used in the hinge max(0, m - d).
  Test-time discrepancy = L1 distance sum_c |p1_c(x) - p2_c(x)| (oodbench scores its negative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from oodbench.detectors.mcd import mcd_score  # noqa: F401 - the test-time score, re-exported for the methods


def _up(x: Tensor) -> Tensor:
    """At least float32 (half-precision logits under AMP are promoted; float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def energy(logits: Tensor) -> Tensor:
    """Free energy per sample, E(x) = -logsumexp_i f_i(x) (temperature 1)."""
    return -torch.logsumexp(_up(logits), dim=1)


def energy_ft_loss(logits_in: Tensor, logits_out: Tensor, m_in: float, m_out: float) -> Tensor:
    """Liu et al. 2020, Eq. 9: squared hinge on ID energies above ``m_in`` plus outlier energies below ``m_out``."""
    loss_in = F.relu(energy(logits_in) - m_in).pow(2).mean()
    loss_out = F.relu(m_out - energy(logits_out)).pow(2).mean()
    return loss_in + loss_out


def oe_loss(logits_out: Tensor) -> Tensor:
    """Hendrycks et al. 2019: mean over outliers of the cross-entropy to the uniform distribution."""
    return -F.log_softmax(_up(logits_out), dim=1).mean(dim=1).mean()


def entropy(logits: Tensor) -> Tensor:
    """Shannon entropy (nats) of softmax(logits), per sample."""
    log_p = F.log_softmax(_up(logits), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def mcd_discrepancy(logits1: Tensor, logits2: Tensor) -> Tensor:
    """Yu & Aizawa 2019 training discrepancy: mean_x [H(p1(x)) - H(p2(x))] (a scalar, signed)."""
    return (entropy(logits1) - entropy(logits2)).mean()


def mcd_loss(logits1_u: Tensor, logits2_u: Tensor, margin: float) -> Tensor:
    """Unlabelled-data term of MCD step B: max(0, m - d(p1, p2)), the hinge on the batch-mean discrepancy."""
    return F.relu(margin - mcd_discrepancy(logits1_u, logits2_u))
