"""Reading what a test's simulation wrote, through the public API."""

import meanfield as mf


def measures(path, run: str) -> dict:
    """Every measure of run ``run`` of the file at ``path``: name -> Series(time, value)."""
    with mf.open(path) as trajectory:
        recorded = trajectory[run]
        return {name: recorded.series(name) for name in recorded.measures}


def statuses(path) -> dict:
    """Run name -> status, for every run in the file."""
    with mf.open(path) as trajectory:
        return {run.name: run.status for run in trajectory}
