"""Config collections for Fashion-MNIST (the ``FashionMNIST`` datamodule: 28x28 clothing photos padded to 32x32).

* ``bcos_fast``: small B-cos ResNets sized for a 2-core CPU (the ``python -m bcos.demo --dataset
  FashionMNIST`` job);
* ``baseline``: their standard (non-B-cos) twins: same depth and widths, ReLU, centred batch norm,
  normalised RGB input, cross-entropy;
* ``norm_ablations_final``: the CIFAR-10 normalisation ablation's B-cos ResNets on Fashion-MNIST.
"""
