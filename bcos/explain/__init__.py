"""Explanations of B-cos networks: the exact core re-exported, post-hoc explainers, localisation.

The exact core (W(x), :class:`Explanation`, completeness, the pictures) lives in
:mod:`bcos.explanation`, below the models; its names are re-exported here so
``from bcos.explain import check_completeness, plot_contribution_map`` works. This package sits
above the models, the data and the experiments: the post-hoc explainers (:mod:`.methods`), the
localisation analysis (:mod:`.localisation`), the HTML report (:mod:`.report`) and the Quantus
adapter are imported explicitly, never from here.
"""

from bcos.explanation import (
    CompletenessResult,
    Explanation,
    check_completeness,
    dynamic_linear_weights,
    explain,
    gradient_to_image,
    gradients_to_images,
    plot_contribution_map,
    plot_image_grid,
)

__all__ = [
    "CompletenessResult",
    "Explanation",
    "check_completeness",
    "dynamic_linear_weights",
    "explain",
    "gradient_to_image",
    "gradients_to_images",
    "plot_contribution_map",
    "plot_image_grid",
]
