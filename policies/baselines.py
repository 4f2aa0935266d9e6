"""The ranker specs that need no model (declared once; ``policies.rankers`` builds them)."""

BASELINES = ("random", "popularity", "oracle")
"""Uniform random, item popularity, the simulator's truth."""
