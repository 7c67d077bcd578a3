"""Grids of scenarios: the sweep file, its grid and its execution (``sweep``), and the results
table a sweep writes and the analyses read (``table``)."""
