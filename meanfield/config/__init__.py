"""The scenario as a user writes it: the schema of its sections and the rules between them
(``scenario``), YAML reading and ``--set`` overrides, and where the bundled scenarios and sweeps
live (``bundled``). Asks the model's tables (run kinds, measures) and nothing above."""
