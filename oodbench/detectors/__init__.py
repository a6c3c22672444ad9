"""OOD detectors; every score is higher = more in-distribution (see :mod:`oodbench.detectors.base`)."""

from oodbench.detectors.base import Detector, FeatureDetector, FitData, LogitDetector, ModelDetector
from oodbench.detectors.distance import KNN, Mahalanobis, MahalanobisEnsemble, ViM
from oodbench.detectors.logit_scores import MSP, Energy, MaxLogit
from oodbench.detectors.odin import ODIN
from oodbench.detectors.shaping import ASH, DICE, ReAct, Shaped

__all__ = [
    "ASH", "DICE", "KNN", "MSP", "ODIN", "Detector", "Energy", "FeatureDetector", "FitData", "LogitDetector",
    "Mahalanobis", "MahalanobisEnsemble", "MaxLogit", "ModelDetector", "ReAct", "Shaped", "ViM",
]
