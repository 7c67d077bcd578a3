"""meanfield: two-layer neural networks at infinite width, rich (mean-field) and lazy (NTK) side by side.

The application package: scenarios, data, parameterizations, runs, storage, diagnostics
and the command line. The numerical core lives in the ``solvers`` package.
"""

__version__ = "0.1.0"
