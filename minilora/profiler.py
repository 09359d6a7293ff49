"""``with minilora.profile() as prof:`` -- what ran, how often, how long, how many FLOPs.

Every op goes through ``Function.apply`` (forward) and the backward engine, and both report here
when a profiler is active. ``prof.table()`` shows, per op and direction, calls, time and FLOPs, so a
learner can *see* that a frozen weight's gradient GEMM never runs.
"""
import time
from collections import defaultdict

active = None  # the Profile currently recording, or None (checked on every op: keep it cheap)


class _Row:
    __slots__ = ("calls", "seconds", "flops")

    def __init__(self):
        self.calls, self.seconds, self.flops = 0, 0.0, 0


class Profile:
    def __init__(self):
        self.rows = defaultdict(_Row)  # (op name, "forward" | "backward") -> _Row
        self._outer = None

    def record(self, op, direction, seconds, flops):
        row = self.rows[(op, direction)]
        row.calls += 1
        row.seconds += seconds
        row.flops += int(flops)

    def __enter__(self):
        global active
        self._outer, active = active, self
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        global active
        active = self._outer
        self.total_seconds = time.perf_counter() - self._start
        return False

    def calls(self, op, direction="forward"):
        """How many times ``op`` ran in ``direction`` (0 if never)."""
        row = self.rows.get((op, direction))
        return row.calls if row else 0

    def flops(self, op=None, direction=None):
        return sum(r.flops for (name, d), r in self.rows.items()
                   if (op is None or name == op) and (direction is None or d == direction))

    def table(self, sort_by="seconds", limit=None):
        """A text table of every (op, direction), largest ``sort_by`` first."""
        keys = {"seconds": lambda kv: kv[1].seconds, "calls": lambda kv: kv[1].calls,
                "flops": lambda kv: kv[1].flops}
        if sort_by not in keys:
            raise ValueError(f"sort_by must be one of {sorted(keys)}, got {sort_by!r}")
        items = sorted(self.rows.items(), key=keys[sort_by], reverse=True)[:limit]
        lines = [f"{'op':<22}{'direction':<10}{'calls':>8}{'time ms':>11}{'GFLOP':>10}{'GFLOP/s':>10}"]
        for (op, direction), r in items:
            rate = r.flops / r.seconds / 1e9 if r.seconds > 0 else 0.0
            lines.append(f"{op:<22}{direction:<10}{r.calls:>8}{r.seconds * 1e3:>11.3f}"
                         f"{r.flops / 1e9:>10.4f}{rate:>10.2f}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def profile():
    """Context manager recording every op run inside it."""
    return Profile()
