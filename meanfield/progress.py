"""Progress on stderr: model time reached, steps per second, ETA (tqdm)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class ModelTimeBar:
    """A progress bar over model time [t0, t_end] for one run; ``update_state`` after each step."""

    def __init__(self, name: str, t0: float, t_end: float, enabled: bool = True):
        self.name, self.t0, self.t_end, self.enabled = name, t0, t_end, enabled
        self.bar = None

    def __enter__(self):
        if self.enabled:
            self.bar = tqdm(
                total=self.t_end, initial=self.t0, desc=self.name, file=sys.stderr, leave=True,
                bar_format="{desc}: t = {n:.4g} / {total:.4g} |{bar}| [{elapsed} < {remaining}{postfix}]",
                mininterval=0.25,
            )
            self._steps0, self._clock0, self._steps = None, time.perf_counter(), 0
        return self

    def update_state(self, state) -> None:
        if self.bar is None:
            return
        if self._steps0 is None:
            self._steps0 = state.step
        self._steps = state.step
        self.bar.update(state.t - self.bar.n)
        if self.bar.n == self.t_end or self.bar.last_print_n == self.bar.n:
            elapsed = time.perf_counter() - self._clock0
            rate = (self._steps - self._steps0) / elapsed if elapsed > 0 else 0.0
            self.bar.set_postfix_str(f"{rate:.3g} steps/s", refresh=False)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


def progress_factory(enabled: bool):
    """What ``simulation.simulate`` calls per run: ``factory(name, t0, t_end) -> ModelTimeBar``."""
    return lambda name, t0, t_end: ModelTimeBar(name, t0, t_end, enabled)


class PointsBar:
    """Progress across the points of a sweep: a bar on a terminal, else one log line per point."""

    def __init__(self, total: int, enabled: bool, log):
        self.total, self.enabled, self.log, self.bar, self.count = total, enabled, log, None, 0

    def __enter__(self):
        if self.enabled:
            self.bar = tqdm(total=self.total, desc="points", file=sys.stderr, unit="pt")
        return self

    def update(self, point, row) -> None:
        self.count += 1
        coords = ", ".join(f"{key}={value}" for key, value in point.coords.items())
        message = f"{point.id} {row['status']} ({row['seconds']:.1f} s): {coords}"
        if row["status"] != "complete":
            message += f": {row['reason']}"
        if self.bar is None:
            self.log(f"[{self.count}] {message}")
        else:
            self.bar.update()
            if row["status"] != "complete":
                self.bar.write(message, file=sys.stderr)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
