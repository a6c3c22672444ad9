"""Shaper chains from YAML alone: ReAct then DICE / KNN equal the steps composed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oodbench.detectors import DICE, KNN, FitData, ReAct
from oodbench.detectors.logit_scores import Energy
from oodbench.detectors.shaping import Chain
from oodbench.errors import OodbenchError


def _data(n: int = 200, d: int = 12, c: int = 4) -> tuple[FitData, torch.Tensor, nn.Linear]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    head = nn.Linear(d, c)
    feats = torch.rand(n, d, generator=g) * torch.linspace(0.1, 3, d)
    return FitData(feats, torch.arange(n) % c, head(feats).detach(), head, "toy"), torch.rand(30, d, generator=g), head


def test_react_then_dice_equals_the_steps_by_hand():
    fit, test, head = _data()
    chain = Chain([ReAct(90)], DICE(80))
    assert chain.needs_fit
    chain.fit(fit)
    react, dice = ReAct(90), DICE(80)
    react.fit(fit)
    clipped = react.shape(fit.features)
    dice.fit(FitData(clipped, fit.labels, fit.logits, head, "toy"))
    with torch.no_grad():
        assert torch.equal(chain.score_features(test, head), dice.score_features(react.shape(test), head))
    assert chain.params["then"].startswith("DICE(") and chain.metric_hints() == {}


def test_react_then_knn_and_bad_orders():
    fit, test, head = _data()
    chain = Chain([ReAct(95)], KNN(k=5))
    chain.fit(fit)
    react, knn = ReAct(95), KNN(k=5)
    react.fit(fit)
    knn.fit(FitData(react.shape(fit.features), fit.labels, fit.logits, head, "toy"))
    assert torch.equal(chain.score_features(test, head), knn.score_features(react.shape(test), head))
    with pytest.raises(OodbenchError, match="use it as the final step"):
        Chain([DICE(90)], KNN())
    with pytest.raises(OodbenchError, match="ends in a feature detector"):
        Chain([ReAct()], Energy())
