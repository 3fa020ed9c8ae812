"""Benchmarks: experiments, workload generators, histograms, reports."""
