"""Standard (non-B-cos) torchvision models on ImageNet, for reproducing baseline numbers."""
