"""The exact explanation of a B-cos network: W(x), contributions, completeness and pictures.

This package sits below the models (it imports only :mod:`bcos.modules`), so every model's
``explain`` uses it without importing anything above. The post-hoc explainers and the
localisation analysis live above the models in :mod:`bcos.explain`, which re-exports these names
(``from bcos.explain import explain, check_completeness`` keeps working).

* :mod:`.contributions` — :func:`explain`, :class:`Explanation`, :func:`check_completeness`;
* :mod:`.visualize` — the RGBA explanation images and the matplotlib helpers;
* :mod:`.checks` — the input, target and logit checks every explanation entry point shares.
"""

from bcos.explanation.contributions import (
    CompletenessResult,
    Explanation,
    check_completeness,
    dynamic_linear_weights,
    explain,
)
from bcos.explanation.visualize import (
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
