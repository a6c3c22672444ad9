"""Training methods: one class each, built from ``oodbench/conf/train/method/*.yaml`` by Hydra ``_target_``.

``step(model, batch_in, batch_out) -> (loss, logs)``: ``batch_in = (x, y)`` are float pixels in [0, 1] and
labels on the device, ``batch_out`` the outlier pixels or None; ``logs`` are detached scalar tensors averaged
per epoch into ``log.csv``. ID and outlier images go through the network in one batch, as in the OE / Energy
code (BatchNorm sees both). Every method logs ``train_acc`` and the mean energies ``e_in`` / ``e_out`` (head 1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oodbench.errors import OodbenchError
from oodbench.models.two_head import both_heads
from oodbench.train.losses import energy, energy_ft_loss, mcd_loss, mcd_score, oe_loss

Logs = dict[str, Tensor]


def _split(logits: Tensor, n_in: int) -> tuple[Tensor, Tensor]:
    return logits[:n_in], logits[n_in:]


def _common(logits_in: Tensor, y: Tensor, logits_out: Tensor | None) -> Logs:
    logs = {"train_acc": (logits_in.argmax(1) == y).float().mean(), "e_in": energy(logits_in).mean()}
    if logits_out is not None:
        logs["e_out"] = energy(logits_out).mean()
    return {k: v.detach() for k, v in logs.items()}


class Method:
    """Base: ``needs_outliers`` says whether the trainer loads the outlier pool; ``two_heads`` whether the
    network is the MCD two-head variant of the architecture."""

    name: ClassVar[str]
    needs_outliers: ClassVar[bool] = True
    two_heads: ClassVar[bool] = False

    @property
    def hyperparams(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def _outliers(self, batch_out: Tensor | None) -> Tensor:
        if batch_out is None:
            raise OodbenchError(f"method {self.name} needs outlier batches, but none were given")
        return batch_out

    def step(self, model: nn.Module, batch_in: tuple[Tensor, Tensor], batch_out: Tensor | None
             ) -> tuple[Tensor, Logs]:
        raise NotImplementedError


class CrossEntropy(Method):
    """Plain supervised training: cross-entropy on labelled ID images (no outliers)."""

    name = "classifier"
    needs_outliers = False

    def step(self, model, batch_in, batch_out):
        x, y = batch_in
        logits = model(x).float()
        ce = F.cross_entropy(logits, y)
        return ce, {"ce": ce.detach(), **_common(logits, y, None)}


class EnergyFT(Method):
    """Energy-bounded learning (Liu et al. 2020, Eq. 9): CE + lam * (squared hinges at m_in and m_out)."""

    name = "energy_ft"

    def __init__(self, m_in: float = -23.0, m_out: float = -5.0, lam: float = 0.1) -> None:
        if m_in >= m_out:
            raise OodbenchError(f"energy_ft needs m_in < m_out (ID energies are pushed below m_in, outlier "
                                f"energies above m_out), got m_in={m_in}, m_out={m_out}")
        if lam < 0:
            raise OodbenchError(f"energy_ft lam must be >= 0, got {lam}")
        self.m_in, self.m_out, self.lam = float(m_in), float(m_out), float(lam)

    def step(self, model, batch_in, batch_out):
        x, y = batch_in
        logits_in, logits_out = _split(model(torch.cat([x, self._outliers(batch_out)])).float(), len(x))
        ce = F.cross_entropy(logits_in, y)
        reg = energy_ft_loss(logits_in, logits_out, self.m_in, self.m_out)
        return ce + self.lam * reg, {"ce": ce.detach(), "energy_reg": reg.detach(),
                                     **_common(logits_in, y, logits_out)}


class OutlierExposure(Method):
    """Outlier Exposure (Hendrycks et al. 2019): CE + lam * cross-entropy of outliers to the uniform."""

    name = "oe"

    def __init__(self, lam: float = 0.5) -> None:
        if lam < 0:
            raise OodbenchError(f"oe lam must be >= 0, got {lam}")
        self.lam = float(lam)

    def step(self, model, batch_in, batch_out):
        x, y = batch_in
        logits_in, logits_out = _split(model(torch.cat([x, self._outliers(batch_out)])).float(), len(x))
        ce = F.cross_entropy(logits_in, y)
        reg = oe_loss(logits_out)
        return ce + self.lam * reg, {"ce": ce.detach(), "oe_reg": reg.detach(),
                                     **_common(logits_in, y, logits_out)}


class MCD(Method):
    """MCD step B (Yu & Aizawa 2019): CE of both heads on labelled ID + max(0, m - d) on unlabelled images.

    The unlabelled images are the outlier batch, optionally with the first ``unlabeled_id_fraction`` of the ID
    batch appended without labels (the paper's unlabelled set was a mix of ID and OOD test images).
    """

    name = "mcd"
    two_heads = True

    def __init__(self, margin: float = 1.2, unlabeled_id_fraction: float = 0.0) -> None:
        if margin <= 0:
            raise OodbenchError(f"mcd margin must be > 0, got {margin}")
        if not 0.0 <= unlabeled_id_fraction <= 1.0:
            raise OodbenchError(f"mcd unlabeled_id_fraction must be in [0, 1], got {unlabeled_id_fraction}")
        self.margin, self.unlabeled_id_fraction = float(margin), float(unlabeled_id_fraction)

    def step(self, model, batch_in, batch_out):
        x, y = batch_in
        n_in, n_out = len(x), len(self._outliers(batch_out))
        l1, l2 = both_heads(model).both(model.features(torch.cat([x, batch_out])))
        l1, l2 = l1.float(), l2.float()
        ce = F.cross_entropy(l1[:n_in], y) + F.cross_entropy(l2[:n_in], y)
        k = int(round(self.unlabeled_id_fraction * n_in))
        unl = torch.cat([torch.arange(k, device=x.device), torch.arange(n_in, n_in + n_out, device=x.device)])
        unsup = mcd_loss(l1[unl], l2[unl], self.margin)
        logs = {"ce": ce.detach(), "mcd_hinge": unsup.detach(),
                "l1_in": mcd_score(l1[:n_in], l2[:n_in]).mean().detach(),
                "l1_out": mcd_score(l1[n_in:], l2[n_in:]).mean().detach(), **_common(l1[:n_in], y, l1[n_in:])}
        return ce + unsup, logs
