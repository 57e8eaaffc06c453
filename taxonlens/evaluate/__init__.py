"""Evaluation: hierarchical metrics over name paths, prediction files and scoring against a benchmark."""

from taxonlens.evaluate.metrics import (
    Backoff,
    HierarchicalReport,
    Severity,
    backoff,
    hca,
    hierarchical_report,
    leaf_accuracy,
    mistake_severity,
    per_level_accuracy,
    por,
    reported_rank_accuracy,
    s_por,
    select_levels,
    tor,
    valid_path_pct,
)
from taxonlens.evaluate.predictions import (
    EvaluationReport,
    Prediction,
    evaluate_files,
    read_predictions,
    write_predictions,
)

__all__ = [
    "Backoff",
    "EvaluationReport",
    "HierarchicalReport",
    "Prediction",
    "Severity",
    "backoff",
    "evaluate_files",
    "hca",
    "hierarchical_report",
    "leaf_accuracy",
    "mistake_severity",
    "per_level_accuracy",
    "por",
    "read_predictions",
    "reported_rank_accuracy",
    "s_por",
    "select_levels",
    "tor",
    "valid_path_pct",
    "write_predictions",
]
