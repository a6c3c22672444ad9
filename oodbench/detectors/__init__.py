"""OOD detectors; every score is higher = more in-distribution (see :mod:`oodbench.detectors.base`)."""

from oodbench.detectors.base import Detector, FeatureDetector, FitData, LogitDetector, ModelDetector
from oodbench.detectors.distance import KNN, RMD, Mahalanobis, MahalanobisEnsemble, ViM, ViMResidual
from oodbench.detectors.head_scores import FDBD, NCI, SHE, GradNorm
from oodbench.detectors.logit_scores import GEN, MSP, Energy, Entropy, KLMatching, MaxLogit, TemperatureScaling
from oodbench.detectors.neighbours import NNGuide, Relation
from oodbench.detectors.odin import ODIN
from oodbench.detectors.shaping import ASH, DICE, SCALE, VRA, ReAct, Shaped

__all__ = [
    "ASH", "DICE", "FDBD", "GEN", "KNN", "MSP", "NCI", "ODIN", "RMD", "SCALE", "SHE", "VRA", "Detector", "Energy",
    "Entropy", "FeatureDetector", "FitData", "GradNorm", "KLMatching", "LogitDetector", "Mahalanobis",
    "MahalanobisEnsemble", "MaxLogit", "ModelDetector", "NNGuide", "ReAct", "Relation", "Shaped",
    "TemperatureScaling", "ViM", "ViMResidual",
]
