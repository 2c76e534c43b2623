"""Metrics for particle segmentation: stateless functions with shapes and edge cases in their docstrings.

Instance metrics take a label map (H, W) or a bool mask stack (N, H, W) per side (see
:mod:`semkit.metrics.inputs`); statistics first (:func:`pairwise_overlap`), scores from statistics.

* instance: :func:`aji_plus`, :func:`match_instances` (correct/missed/false positive at IoU ≥ 0.4),
  :func:`panoptic_quality`, :func:`precision_recall_f1`, :func:`coco_mask_ap`;
* :func:`error_reduction_rate`, :func:`err_matrix`;
* semantic: :func:`confusion_matrix`, :func:`semantic_scores`, :func:`semantic_metrics` (dataset-level and
  image-averaged, named as such);
* confidence: :func:`confidence_auroc`, :func:`reliability_curve`, :func:`expected_calibration_error`,
  :func:`confidence_analysis`;
* sizes: :func:`particle_sizes`, :func:`compare_distributions`, :func:`compare_sizes`,
  :func:`agreement_matrix`;
* evaluation: :class:`InstanceSet`, :func:`evaluate`, :func:`evaluate_methods`, :func:`load_evaluation_inputs`,
  :func:`load_or_simulate_study`;
* simulated predictions for demos and tests: :mod:`semkit.metrics.perturb`.
"""

from semkit.metrics.agreement import AGREEMENT_METRICS, AgreementMatrix, agreement_matrix
from semkit.metrics.coco_ap import coco_mask_ap
from semkit.metrics.confidence import (
    ConfidenceAnalysis,
    confidence_analysis,
    confidence_auroc,
    confidence_by_flag,
    expected_calibration_error,
    reliability_curve,
)
from semkit.metrics.err import err_matrix, error_reduction_rate
from semkit.metrics.evaluate import (
    Evaluation,
    EvaluationSettings,
    evaluate,
    evaluate_methods,
    evaluate_paths,
    load_evaluation_inputs,
    load_or_simulate_study,
    summarize,
)
from semkit.metrics.instance import (
    Matching,
    Overlap,
    aji_plus,
    aji_plus_counts,
    aji_plus_from_overlap,
    match_instances,
    match_overlap,
    pairwise_overlap,
    panoptic_quality,
    precision_recall_f1,
)
from semkit.metrics.instance_set import InstanceSet, as_instance_set
from semkit.metrics.perturb import (
    METHOD_PRESETS,
    PerturbConfig,
    perturb_instances,
    simulate_predictions,
    simulate_study,
)
from semkit.metrics.semantic import SemanticEvaluation, confusion_matrix, semantic_metrics, semantic_scores
from semkit.metrics.size import DistributionComparison, compare_distributions, compare_sizes, particle_sizes

__all__ = [
    "AGREEMENT_METRICS",
    "METHOD_PRESETS",
    "AgreementMatrix",
    "ConfidenceAnalysis",
    "DistributionComparison",
    "Evaluation",
    "EvaluationSettings",
    "InstanceSet",
    "Matching",
    "Overlap",
    "PerturbConfig",
    "SemanticEvaluation",
    "agreement_matrix",
    "aji_plus",
    "aji_plus_counts",
    "aji_plus_from_overlap",
    "as_instance_set",
    "coco_mask_ap",
    "compare_distributions",
    "compare_sizes",
    "confidence_analysis",
    "confidence_auroc",
    "confidence_by_flag",
    "confusion_matrix",
    "err_matrix",
    "error_reduction_rate",
    "evaluate",
    "evaluate_methods",
    "evaluate_paths",
    "expected_calibration_error",
    "load_evaluation_inputs",
    "load_or_simulate_study",
    "match_instances",
    "match_overlap",
    "pairwise_overlap",
    "panoptic_quality",
    "particle_sizes",
    "perturb_instances",
    "precision_recall_f1",
    "reliability_curve",
    "semantic_metrics",
    "semantic_scores",
    "simulate_predictions",
    "simulate_study",
    "summarize",
]
