"""MSP, Energy, MaxLogit and ODIN against their formulas on small inputs and a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oodbench.detectors.logit_scores import MSP, Energy, MaxLogit
from oodbench.detectors.odin import ODIN
from oodbench.models.normalized import Classifier

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])


def test_msp_by_hand():
    z = math.exp(2) + 1 + math.exp(-1)
    assert MSP().score_logits(LOGITS).tolist() == pytest.approx([math.exp(2) / z, 1 / 3])


def test_energy_by_hand_and_temperature():
    z = math.exp(2) + 1 + math.exp(-1)
    assert Energy().score_logits(LOGITS).tolist() == pytest.approx([math.log(z), 0.5 + math.log(3)])
    t = 2.0  # T·log Σ exp(f/T)
    expect = t * math.log(math.exp(1) + 1 + math.exp(-0.5))
    assert Energy(t).score_logits(LOGITS)[0].item() == pytest.approx(expect)
    with pytest.raises(ValueError):
        Energy(0.0)


def test_maxlogit_and_odin_without_noise():
    assert MaxLogit().score_logits(LOGITS).tolist() == [2.0, 0.5]
    odin = ODIN(temperature=1000.0, epsilon=0.0)
    assert odin.consumes == "logits"
    expect = math.exp(2 / 1000) / (math.exp(2 / 1000) + 1 + math.exp(-1 / 1000))
    assert odin.score_logits(LOGITS)[0].item() == pytest.approx(expect)


def _tiny_classifier() -> Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 4))
    return Classifier(net, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).eval()


def test_odin_perturbation_matches_eq2_in_normalized_space():
    """Pixel step ε·sign(g) equals ODIN's code: normalized step ε·sign(g)/std (the models normalize inside)."""
    model, eps, t = _tiny_classifier(), 0.01, 1000.0
    x = torch.rand(5, 3, 2, 2)
    odin = ODIN(temperature=t, epsilon=eps)
    assert odin.consumes == "model"
    # ODIN's code: gradient of CE(f(x_n)/T, ŷ) w.r.t. the *normalized* input, step ε·sign/std there.
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    xn = ((x - mean) / std).requires_grad_(True)
    logits = model.net(xn)
    loss = nn.functional.cross_entropy(logits / t, logits.argmax(1), reduction="sum")
    (g,) = torch.autograd.grad(loss, xn)
    xn_tilde = xn.detach() - eps * g.sign() / std
    expect = torch.softmax(model.net(xn_tilde) / t, dim=1).max(1).values
    got = odin.score_batch(model, x)
    assert torch.allclose(got.float(), expect, atol=1e-6)
    # and the step raised the softmax score of the predicted class (the point of Eq. 2)
    assert (got >= ODIN(temperature=t, epsilon=0.0).score_logits(model(x)) - 1e-9).all()


def test_odin_rejects_bad_parameters():
    with pytest.raises(ValueError):
        ODIN(temperature=0)
    with pytest.raises(ValueError):
        ODIN(epsilon=-1)
