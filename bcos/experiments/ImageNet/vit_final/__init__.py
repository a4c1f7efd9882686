"""B-cos and standard (simple) vision transformers on ImageNet."""
