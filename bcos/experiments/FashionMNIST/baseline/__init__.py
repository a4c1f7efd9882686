"""Standard CIFAR-style ResNets on Fashion-MNIST: the non-B-cos twins of ``bcos_fast`` and the ablation."""
