"""Reference-compatible entry points of the interpretability tools (the code lives in ``bcos.explain``)."""
