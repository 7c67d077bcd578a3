"""Grids of scenarios: the sweep file, its grid and its points (``grid``), running them
(``execution``), and the results table a sweep writes and the analyses read (``table``)."""
