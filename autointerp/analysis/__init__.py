"""Statistics for the report: correlations with importance, the study's group comparison,
human-vs-automatic agreement, Krippendorff's alpha and the human noise ceiling."""

from autointerp.analysis.analyze import Analysis, AnalysisSettings, analyze
from autointerp.analysis.inputs import (
    Importance,
    Issue,
    RaterScores,
    human_rater,
    read_ablation_curve,
    read_importance_csv,
    read_rating_csv,
)
from autointerp.analysis.stats import correlation_test, krippendorff_alpha_interval

__all__ = [
    "Analysis",
    "AnalysisSettings",
    "Importance",
    "Issue",
    "RaterScores",
    "analyze",
    "correlation_test",
    "human_rater",
    "krippendorff_alpha_interval",
    "read_ablation_curve",
    "read_importance_csv",
    "read_rating_csv",
]
