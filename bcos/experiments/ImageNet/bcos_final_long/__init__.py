"""B-cos ImageNet models with the long torchvision recipe (600 epochs, 8 GPUs)."""
