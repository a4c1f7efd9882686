"""The B-cos ImageNet models of the paper (90 epochs, 4 GPUs)."""
