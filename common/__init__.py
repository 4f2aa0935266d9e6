"""Foundations below every package: typed configs, Ray start-up, arm assignment."""
