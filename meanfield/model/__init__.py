"""What is simulated, free of files and of the run machinery: the tasks (``data``), the
parameterizations (``parameterization``), the table of run kinds (``kinds``) and of measures
(``measures``), the measures themselves and the verdict (``diagnostics``), the curvature measures
(``curvature``) and the state of a run (``state``). Refers to the scenario's section types only
in annotations; imports no layer above."""
