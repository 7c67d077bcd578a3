"""Numerical core of meanfield: Numba kernels and integrators (arrays in, arrays out)."""
