"""Benchmarks: ``python -m django_gearattach.bench`` prints a table measured in one run.

Figures from one run are compared with each other (ratios), never with fixed
thresholds: these machines are shared and noisy.
"""
