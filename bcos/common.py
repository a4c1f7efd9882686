"""Compatibility names of the reference's ``bcos.common``.

Code written against B-cos-v2 (``from bcos.common import BcosUtilMixin, gradient_to_image``) keeps
working; new code should import from :mod:`bcos.models.base`, :mod:`bcos.modules` and
:mod:`bcos.explanation` directly.
"""

from bcos.explanation.visualize import gradient_to_image, plot_contribution_map
from bcos.models.base import BcosUtilMixin
from bcos.modules.explanation_mode import explanation_mode

__all__ = ["BcosUtilMixin", "explanation_mode", "gradient_to_image", "plot_contribution_map"]
