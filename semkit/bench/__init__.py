"""Benchmarks behind ``semkit bench …``: each module times one hot path and prints what it measured."""
