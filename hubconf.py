"""torch.hub entry points of the published B-cos models, generated from the model registry.

    model = torch.hub.load("B-cos/B-cos-v2", "resnet50", pretrained=True)
    model = torch.hub.load("path/to/this/repo", "resnet50", source="local", pretrained=True)
    x = model.transform(image)[None]

One entry point per function of :mod:`bcos.models.pretrained` (see ``bcos.list_models()``), with
its signature and docstring.
"""

dependencies = ["torch", "torchvision"]

from bcos.models import pretrained as _pretrained  # noqa: E402  (torch.hub.list() shows every public callable here)

globals().update({name: getattr(_pretrained, name) for name in _pretrained.__all__ if name != "list_available"})
