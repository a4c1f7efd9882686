"""Small B-cos ResNets on Fashion-MNIST that train on 2 CPU cores in minutes (the Fashion-MNIST demo)."""
