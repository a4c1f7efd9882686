"""bcos: B-cos networks, interpretable by design.

Importing ``bcos`` is cheap: it never imports Lightning, Captum or the training stack.
"""

__version__ = "0.2.0"
