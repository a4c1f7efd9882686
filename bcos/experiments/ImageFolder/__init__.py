"""Config collections for custom ImageFolder data (the ``ImageFolder`` datamodule)."""
