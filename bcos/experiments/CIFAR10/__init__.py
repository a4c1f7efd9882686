"""Config collections for the CIFAR10 dataset."""
