"""CIFAR-10 B-cos ResNets with every normalisation layer of the ablation (888 configs)."""
