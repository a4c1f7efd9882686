"""The math of B-cos networks: B-cos layers, norms, the logit layer, losses and explanation mode.

Names follow the B-cos-v2 reference so that user code and configs port unchanged.
"""

from bcos.modules import norms
from bcos.modules.bcos_conv import BcosConv2d, BcosConv2dWithScale, NormedConv2d
from bcos.modules.bcos_linear import BcosLinear, NormedLinear
from bcos.modules.explanation_mode import DetachableModule, explanation_mode
from bcos.modules.logit_layer import LogitLayer
from bcos.modules.losses import BinaryCrossEntropyLoss, UniformOffLabelsBCEWithLogitsLoss
from bcos.modules.norms import *  # noqa: F403 (the reference exports the norms here too)
from bcos.modules.norms import __all__ as _norms_all

__all__ = [
    "norms",
    "BcosConv2d",
    "BcosConv2dWithScale",
    "NormedConv2d",
    "BcosLinear",
    "NormedLinear",
    "LogitLayer",
    "BinaryCrossEntropyLoss",
    "UniformOffLabelsBCEWithLogitsLoss",
    "DetachableModule",
    "explanation_mode",
    *_norms_all,
]
