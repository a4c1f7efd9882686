"""Benchmarks of B-cos layers and networks against their standard counterparts.

``python -m benchmarks.run_cpu`` (``make benchmark``) runs the CPU suite and prints a table of
B-cos / standard ratios measured side by side; ``python -m benchmarks.run_gpu`` runs the GPU rows
on one CUDA device and writes JSON. Results are recorded in ``docs/benchmarks.md``.
"""
