"""Benchmarks of the whole system on this machine (issue 9): ``make bench``."""
