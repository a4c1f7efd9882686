"""Explanations of B-cos networks.

The core (:mod:`.contributions`, :mod:`.visualize`) sits below the models and imports only
``bcos.modules``; the post-hoc explainers (:mod:`.methods`) and the localisation analysis sit above
the models and are imported explicitly, never from here.
"""

from bcos.explain.contributions import (
    CompletenessResult,
    Explanation,
    check_completeness,
    dynamic_linear_weights,
    explain,
)
from bcos.explain.visualize import (
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
