"""Config collections for the ImageNet dataset."""
