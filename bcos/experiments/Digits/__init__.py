"""Config collections for the bundled scikit-learn digits (the ``Digits`` datamodule)."""
