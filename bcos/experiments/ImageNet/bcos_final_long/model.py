"""``get_model`` of the bcos_final_long collection: the same builder as bcos_final."""

from bcos.experiments.ImageNet.bcos_final.model import get_model

__all__ = ["get_model"]
