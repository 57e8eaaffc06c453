"""Benchmarks that print figures and ratios (``taxonlens bench ...``); never timed unit tests."""
