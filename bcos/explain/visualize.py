"""The documented import path ``bcos.explain.visualize``; the code is :mod:`bcos.explanation.visualize`.

The explanation pictures moved below the models with the rest of the exact core; this name stays
so existing code (``from bcos.explain.visualize import gradient_to_image``) keeps working.
"""

from bcos.explanation.visualize import (
    gradient_to_image,
    gradients_to_images,
    plot_contribution_map,
    plot_image_grid,
)

__all__ = ["gradient_to_image", "gradients_to_images", "plot_contribution_map", "plot_image_grid"]
