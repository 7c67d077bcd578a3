"""Points of a sweep that did not converge: a run that asked for ``train.stop_loss > 0`` and
ran to ``t_end`` with its training loss above it. Their final values are where t_end stopped
them, not converged values; ``meanfield analyze`` counts and names them."""

from __future__ import annotations

from ..sweeps.table import Table

ENDED, STOP_LOSS = "ended", "stop_loss"


def unconverged(table: Table) -> dict[str, list[str]]:
    """point -> the runs that ended at t_end, for every complete point whose scenario set
    ``stop_loss > 0`` (empty for a table written before the ``ended`` column existed)."""
    if ENDED not in table.columns or STOP_LOSS not in table.columns:
        return {}
    runs = [column[: -len(".ended")] for column in table.columns if column.endswith(".ended")]
    found = {}
    for row in table.rows():
        if row["status"] == "complete" and float(row[STOP_LOSS]) > 0 and row[ENDED] == "t_end":
            found[row["point"]] = [run for run in runs if row.get(f"{run}.ended") == "t_end"]
    return found


def format_unconverged(found: dict[str, list[str]], points: int, shown: int = 8) -> str:
    """The report's line on the points that did not converge ('' if none)."""
    if not found:
        return ""
    named = "; ".join(f"{point}: {', '.join(runs)}" for point, runs in list(found.items())[:shown])
    more = f"; and {len(found) - shown} more (column ended of results.csv)" if len(found) > shown else ""
    return (f"did not converge: {len(found)} of {points} points, a run ended at t_end with its training loss "
            f"above train.stop_loss ({named}{more}); their final values are where t_end stopped them")
