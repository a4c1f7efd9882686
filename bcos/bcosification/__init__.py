"""B-cosification: turn a trained torchvision or timm model into a B-cos model and fine-tune it.

``bcos.bcosify(model, b=2)`` returns a :class:`BcosifiedModel` that inherits every weight of
``model`` (see :mod:`bcos.bcosification.convert` for what becomes what, and docs/bcosify.md). With
``b=1`` it reproduces the original's logits on ``[x, 1 - x]`` images; fine-tuning at the target B
(``bcos train --bcosify NAME --data-dir DIR``) makes it a B-cos network.
"""

from bcos.bcosification.convert import (
    BIAS_CHOICES,
    IMAGENET_NORMALIZATION,
    MAX_POOL_CHOICES,
    UnsupportedModuleError,
    bcosify,
)
from bcos.bcosification.layers import BcosifiedConv2d, BcosifiedLinear
from bcos.bcosification.model import BcosifiedModel, get_b, set_b
from bcos.bcosification.report import BcosifyReport, Change

__all__ = [
    "bcosify",
    "BcosifiedModel",
    "BcosifiedConv2d",
    "BcosifiedLinear",
    "BcosifyReport",
    "Change",
    "UnsupportedModuleError",
    "set_b",
    "get_b",
    "IMAGENET_NORMALIZATION",
    "BIAS_CHOICES",
    "MAX_POOL_CHOICES",
]
