"""The CIFAR-10 normalisation ablation (B-cos ResNet-20..56 with 12 norms) on Fashion-MNIST."""
