"""torch.hub entry points of the published B-cos models, generated from the model registry.

    model = torch.hub.load("B-cos/B-cos-v2", "resnet50", pretrained=True)
    model = torch.hub.load("path/to/this/repo", "resnet50", source="local", pretrained=True)
    x = model.transform(image)[None]

One entry point per function of :mod:`bcos.models.pretrained` (see ``bcos.list_models()``), with
its signature and docstring; as in the reference, the model also gets ``model.transform``, its
evaluation preprocessing.
"""

dependencies = ["torch", "torchvision"]

import functools as _functools  # noqa: E402  (torch.hub.list() shows every public callable here)

from bcos.data.presets import eval_transform as _eval_transform  # noqa: E402
from bcos.models import pretrained as _pretrained  # noqa: E402


def _with_transform(entry_point):
    @_functools.wraps(entry_point)
    def hub_entry_point(pretrained=False, progress=True, **kwargs):
        model = entry_point(pretrained, progress, **kwargs)
        model.transform = _eval_transform(model)
        return model

    return hub_entry_point


globals().update(
    {name: _with_transform(getattr(_pretrained, name)) for name in _pretrained.__all__ if name != "list_available"}
)
