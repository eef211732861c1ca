"""Throughput benchmarks: ftcl's RLlib algorithms against plain PyTorch and Stable-Baselines3.

A folder of the repository, not part of the installed `ftcl` package. Entry point:
`benchmarks.run.main` (`ftcl bench`, or `python -m benchmarks.run` from the repository root).
"""
