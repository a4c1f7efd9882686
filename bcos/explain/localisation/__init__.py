"""The localisation analysis (grid pointing game) of an explanation method.

* :mod:`.pointing_game` — the pieces: the 16 analysis configurations, the confidence ranking, the
  grids, the scores, their summary and plot;
* :mod:`.analysis` — :func:`run_localisation` (:class:`LocalisationOptions` in,
  :class:`LocalisationResult` out): loads a training run or a registry model and its data, runs
  the game with any explainer and writes the result files. ``bcos localise`` and
  ``python -m interpretability.analyses.localisation`` only parse their arguments into the options.
"""

from bcos.explain.localisation.analysis import (
    CONFIDENCES_FILENAME,
    DEFAULT_PRETRAINED_DIR,
    LoadedSubject,
    LocalisationOptions,
    LocalisationResult,
    load_subject,
    run_localisation,
    weights_identity,
)
from bcos.explain.localisation.pointing_game import (
    LOCALISATION_CONFIGS,
    ConfidenceRanking,
    LocalisationConfig,
    LocalisationSummary,
    cell_fractions,
    evaluate_grids,
    get_localisation_config,
    grid_blocks,
    localisation_scores,
    make_grids,
    plot_scores,
    rank_by_confidence,
    ranking_from_plain,
    ranking_to_plain,
    smooth_attributions,
)

__all__ = [
    "CONFIDENCES_FILENAME",
    "DEFAULT_PRETRAINED_DIR",
    "LoadedSubject",
    "LocalisationOptions",
    "LocalisationResult",
    "load_subject",
    "run_localisation",
    "weights_identity",
    "LOCALISATION_CONFIGS",
    "ConfidenceRanking",
    "LocalisationConfig",
    "LocalisationSummary",
    "cell_fractions",
    "evaluate_grids",
    "get_localisation_config",
    "grid_blocks",
    "localisation_scores",
    "make_grids",
    "plot_scores",
    "rank_by_confidence",
    "ranking_from_plain",
    "ranking_to_plain",
    "smooth_attributions",
]
