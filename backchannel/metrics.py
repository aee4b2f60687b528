"""In-process metrics, rendered in the Prometheus text format by the gateway's /metrics.

Why not prometheus_client: we need a handful of counters, gauges and histograms, a
snapshot for the bot's ``stats`` command and the dashboard, and no global registry that
leaks between tests. This is ~100 lines and has no dependency.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)

LabelKey = tuple[tuple[str, str], ...]


def _key(labels: Mapping[str, str] | None) -> LabelKey:
    return tuple(sorted((labels or {}).items()))


def _fmt_labels(key: LabelKey, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = key + extra
    if not pairs:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in pairs
    )
    return "{" + inner + "}"


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)


class Metrics:
    """A registry of counters, gauges and histograms keyed by name and labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self._values: dict[str, dict[LabelKey, float]] = {}
        self._hists: dict[str, dict[LabelKey, _Histogram]] = {}
        self._collectors: list[Callable[[], None]] = []

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._help.setdefault(name, (kind, help_text))

    def inc(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1.0) -> None:
        self._help.setdefault(name, ("counter", name))
        with self._lock:
            series = self._values.setdefault(name, {})
            k = _key(labels)
            series[k] = series.get(k, 0.0) + value

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self._help.setdefault(name, ("gauge", name))
        with self._lock:
            self._values.setdefault(name, {})[_key(labels)] = value

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None,
                buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self._help.setdefault(name, ("histogram", name))
        with self._lock:
            series = self._hists.setdefault(name, {})
            k = _key(labels)
            hist = series.get(k)
            if hist is None:
                hist = series[k] = _Histogram(buckets)
            hist.counts[bisect.bisect_left(hist.buckets, value)] += 1
            hist.total += value
            hist.n += 1

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        return self._values.get(name, {}).get(_key(labels), 0.0)

    def total(self, name: str) -> float:
        return sum(self._values.get(name, {}).values())

    def quantile(self, name: str, q: float, labels: Mapping[str, str] | None = None) -> float:
        """Approximate quantile from histogram buckets (upper bound of the bucket)."""
        hist = self._hists.get(name, {}).get(_key(labels))
        if hist is None or hist.n == 0:
            return math.nan
        target = q * hist.n
        running = 0
        for i, count in enumerate(hist.counts):
            running += count
            if running >= target:
                return hist.buckets[i] if i < len(hist.buckets) else math.inf
        return math.inf

    def add_collector(self, collect: Callable[[], None]) -> None:
        """Call ``collect()`` before each render: it sets gauges that are read, not
        counted (queue depth, breaker states), so a scrape never sees stale values."""
        self._collectors.append(collect)

    def remove_collector(self, collect: Callable[[], None]) -> None:
        if collect in self._collectors:
            self._collectors.remove(collect)

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        for collect in list(self._collectors):
            collect()
        lines: list[str] = []
        with self._lock:
            for name in sorted(set(self._values) | set(self._hists)):
                kind, help_text = self._help.get(name, ("untyped", name))
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                for k, v in sorted(self._values.get(name, {}).items()):
                    lines.append(f"{name}{_fmt_labels(k)} {v:g}")
                for k, h in sorted(self._hists.get(name, {}).items()):
                    running = 0
                    for bound, count in zip(h.buckets, h.counts, strict=False):
                        running += count
                        lines.append(f"{name}_bucket{_fmt_labels(k, (('le', f'{bound:g}'),))} "
                                     f"{running}")
                    lines.append(f"{name}_bucket{_fmt_labels(k, (('le', '+Inf'),))} {h.n}")
                    lines.append(f"{name}_sum{_fmt_labels(k)} {h.total:g}")
                    lines.append(f"{name}_count{_fmt_labels(k)} {h.n}")
        return "\n".join(lines) + "\n"
