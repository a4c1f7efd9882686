"""Small B-cos ResNets for the bundled scikit-learn digits (the ``make demo`` job, CPU only)."""
