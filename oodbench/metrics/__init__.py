"""OOD-detection metrics: exact (``core``), ODIN's grid protocol (``odin_protocol``) and bootstrap CIs.

Scores are higher = more in-distribution; ID is the positive class unless a name says ``oodpos``.
"""

from oodbench.metrics.bootstrap import bootstrap_metrics, bootstrap_replicates, paired_bootstrap
from oodbench.metrics.core import (
    METRIC_KEYS,
    aupr_in,
    aupr_out,
    auroc,
    check_scores,
    compute_all,
    detection_error,
    fpr95_oodpos,
    fpr_at_tpr,
    id_accuracy,
)
from oodbench.metrics.odin_protocol import (
    ODIN_GRIDS,
    compute_all_odin,
    odin_fpr_at_tpr95,
    odin_grid,
    score_range_grid,
)

__all__ = [
    "METRIC_KEYS",
    "ODIN_GRIDS",
    "aupr_in",
    "aupr_out",
    "auroc",
    "bootstrap_metrics",
    "bootstrap_replicates",
    "paired_bootstrap",
    "check_scores",
    "compute_all",
    "compute_all_odin",
    "detection_error",
    "fpr95_oodpos",
    "fpr_at_tpr",
    "id_accuracy",
    "odin_fpr_at_tpr95",
    "odin_grid",
    "score_range_grid",
]
