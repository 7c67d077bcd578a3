"""What ``meanfield inspect`` prints: the runs of a trajectory side by side."""

from __future__ import annotations

import math
from typing import Optional

from ..model.measures import SHOWN_MEASURES as MEASURE_ORDER

# MEASURE_ORDER: the measures a summary shows, in this order (each where some run has it), read
# off the table of measures (meanfield.model.measures), so one recorded on request shows like any other


REGIME_NUMBERS = (("loss_peak_ratio", "loss peak/start"), ("lambda_ratio", "lambda_T/lambda_0"))
"""The numbers behind a verdict a summary shows beside the final measures (docs/design.md §1.8)."""


def describe_runs(runs, stop_loss: float = 0.0) -> str:
    """A table with one column per run (set-up, final measures, regime predicted and
    measured, the regime table's where a run has a row in it, the loss peak over its start and
    lambda_T / lambda_0 where recorded), then the numbers behind each verdict and how each complete run ended
    (``stop_loss``: the scenario's train.stop_loss)."""
    finals = [run.final() for run in runs]
    verdicts = [run.verdict() for run in runs]
    numbers = [run.regime_numbers() for run in runs]
    tables = [run.table_regime() for run in runs]
    rows = [("", [run.name for run in runs]),
            ("solver", [run.solver + (f" ({run.attrs['kernel']})" if "kernel" in run.attrs else "") for run in runs]),
            ("parameterization", [run.preset for run in runs]),
            ("status", [run.status.split(":")[0] for run in runs]),
            ("t", [_number(run.t) for run in runs])]
    names = [name for name in MEASURE_ORDER if any(name in final for final in finals)]
    rows += [(name, [_number(final[name]) if name in final else "-" for final in finals]) for name in names]
    rows.append(("predicted regime", [run.predicted_regime for run in runs]))
    rows.append(("measured regime", [label for label, _ in verdicts]))
    if any(tables):
        rows.append(("table regime", [table[1] if table else "-" for table in tables]))
    rows += [(label, [_number(each[key]) if key in each else "-" for each in numbers])
             for key, label in REGIME_NUMBERS if any(key in each for each in numbers)]
    width = max(12, *(len(cell) for _, cells in rows for cell in cells)) + 2
    lines = [f"{label:<20}" + "".join(f"{cell:>{width}}" for cell in cells) for label, cells in rows]
    lines.append("")
    for run, final, (label, reason), table in zip(runs, finals, verdicts, tables):
        indent = " " * len(run.name)
        lines.append(f"{run.name}: measured {label}: {reason}")
        if table:
            agree = "agrees" if table[1] == label else "DISAGREES"
            lines.append(f"{indent}  table ({table[0]}): {table[1]}: the measured regime {agree}")
        lines.append(f"{indent}  predicted {run.predicted_regime}: {run.attrs.get('predicted_regime_reason', '')}")
        if run.status.startswith("failed"):
            lines.append(f"{indent}  {run.status}")
        elif run.ended:
            fit = run.fit_measure
            how = ending(run.ended, run.t_stop, stop_loss, fit, final.get(fit, math.nan))
            lines.append(f"{indent}  {run.status}: {how}")
    return "\n".join(lines)


def ending(ended: str, t_stop: float, stop_loss: float, fit: Optional[str] = None, loss: float = math.nan) -> str:
    """How a complete run ended, in words, with its final ``fit`` measure where given:
    'reached stop_loss 0.0001 at t = 12.3, loss_train 9.8e-05', 't_end 100 reached,
    loss_train 0.03 above stop_loss 0.0001' or, without a stop_loss, 't_end 100 reached,
    loss_train 0.03'."""
    text = (f"reached stop_loss {stop_loss:g} at t = {t_stop:.4g}" if ended == "stop_loss"
            else f"t_end {t_stop:g} reached")
    if fit is not None:
        text += f", {fit} {loss:.4g}"
        if ended == "t_end" and stop_loss > 0:
            text += f" above stop_loss {stop_loss:g}"
    return text


def _number(value) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4g}"
