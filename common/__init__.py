"""Foundations below every package: typed configs, counter-based random numbers, Ray start-up,
arm assignment."""
