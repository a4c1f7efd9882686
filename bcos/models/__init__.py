"""B-cos model architectures (ResNet/ResNeXt/Wide-ResNet, DenseNet, VGG, ConvNeXt, simple ViTs).

Builders take the keyword arguments of their architecture class and return *untrained* models;
``pretrained=True`` is refused here (load published weights through the model registry,
:mod:`bcos.models.registry`, where every builder and the models published for it are declared
by the ``@register_architecture`` beside the builder). Importing this package imports every
architecture file, so the registry is complete, and never imports Lightning, torchmetrics or Captum.
"""

from bcos.models.base import BcosUtilMixin
from bcos.models.convnext import *  # noqa: F403
from bcos.models.convnext import __all__ as _convnext_all
from bcos.models.densenet import *  # noqa: F403
from bcos.models.densenet import __all__ as _densenet_all
from bcos.models.resnet import *  # noqa: F403
from bcos.models.resnet import __all__ as _resnet_all
from bcos.models.vgg import *  # noqa: F403
from bcos.models.vgg import __all__ as _vgg_all

# the ViTs are not star-exported (as in the reference), but they register their builders
from bcos.models import vit  # noqa: E402  isort: skip

__all__ = ["BcosUtilMixin", *_resnet_all, *_densenet_all, *_vgg_all, *_convnext_all]

# the reference exposes its published entry points as ``bcos.models.pretrained``
from bcos.models import pretrained  # noqa: E402  (generated from the registry filled above)

__all__ += ["pretrained"]
