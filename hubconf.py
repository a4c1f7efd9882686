"""torch.hub entry points of the published B-cos models.

    model = torch.hub.load("B-cos/B-cos-v2", "resnet50", pretrained=True)
    model = torch.hub.load("path/to/this/repo", "resnet50", source="local", pretrained=True)

Every entry point is a function of :mod:`bcos.models.pretrained`; see ``bcos.list_models()``.
"""

dependencies = ["torch", "torchvision"]

from bcos.models.pretrained import *  # noqa: E402,F403 (torch.hub lists this module's functions)
from bcos.models.pretrained import __all__ as _entry_points  # noqa: E402

# torch.hub.list() shows every public callable here, so keep only the model entry points
del list_available  # noqa: F821
__all__ = [name for name in _entry_points if name != "list_available"]
