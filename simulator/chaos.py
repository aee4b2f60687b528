"""Tunable misbehaviour for the simulator's fake services: latency, errors, outages.

Why a separate module: every fake HTTP service (geocoder, CRM, mailing list, the demo
site) misbehaves the same way, and tests, benchmarks and the demo all want to say how
in one vocabulary. A :class:`Chaos` is a frozen, self-validating description ("200 ms
+-50 ms, 10 % answer 503, down between 10 s and 20 s after start"); a
:class:`ChaosControl` is the live knob one service reads on every call, so a test can
change behaviour while the server runs (``control.set(Chaos(down=True))``).

Randomness comes from a per-control :class:`random.Random`, so a seed makes a run
repeatable. Profiles for the demo and benchmarks are TOML files, one table per service
(see ``chaos.example.toml`` next to this module), read by :func:`load_profile`.
"""

from __future__ import annotations

import logging
import math
import random
import time
import tomllib
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from backchannel.errors import ConfigError

log = logging.getLogger(__name__)

#: Service names a profile may configure (the tables of a chaos profile file).
DEFAULT_SERVICES = ("geocoder", "crm", "crm_xmlrpc", "lists", "site")


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number, not {type(value).__name__}", key=key)
    if not math.isfinite(value):
        raise ConfigError("must be a finite number", key=key)
    return float(value)


@dataclass(frozen=True)
class Chaos:
    """How one fake service misbehaves. The default behaves perfectly.

    - ``latency``: seconds added to every call; ``jitter``: a uniform +-``jitter`` on top
      (never below zero).
    - ``error_rate``: fraction of calls (0..1) that fail with ``error_status``.
    - ``error_status``: 4xx/5xx, or a 3xx redirect to ``location`` (a site that moved).
    - ``retry_after``: seconds sent as ``Retry-After`` on failures (fractions are sent as
      decimals, so fast tests need not wait whole seconds).
    - ``outages``: ``(start, end)`` windows, seconds since the server (re)started its
      clock, during which every call fails with 503 (or a reset, see ``reset``).
    - ``down``: every call fails with 503 (or a reset).
    - ``reset``: fail by dropping the connection instead of answering.
    - ``rate_limit``: at most this many calls in any one-second window; the rest get 429
      with ``Retry-After`` (0 = no limit). Nominatim's public service allows 1/s.
    """

    latency: float = 0.0
    jitter: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    retry_after: float | None = None
    outages: tuple[tuple[float, float], ...] = ()
    down: bool = False
    reset: bool = False
    location: str | None = None
    rate_limit: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "rate_limit"):
            if _number(getattr(self, name), name) < 0:
                raise ConfigError("must not be negative", key=name)
        rate = _number(self.error_rate, "error_rate")
        if not 0.0 <= rate <= 1.0:
            raise ConfigError("must be between 0 and 1", key="error_rate")
        status = self.error_status
        if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 599:
            raise ConfigError("must be an HTTP status between 300 and 599", key="error_status")
        if 300 <= status <= 399 and not self.location:
            raise ConfigError("a 3xx error_status needs a location to redirect to", key="location")
        if self.location is not None and not isinstance(self.location, str):
            raise ConfigError("must be a string", key="location")
        if self.retry_after is not None and _number(self.retry_after, "retry_after") < 0:
            raise ConfigError("must not be negative", key="retry_after")
        for name in ("down", "reset"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError("must be true or false", key=name)
        windows: list[tuple[float, float]] = []
        for window in self.outages:
            if not isinstance(window, list | tuple) or len(window) != 2:
                raise ConfigError("each outage must be a [start, end] pair", key="outages")
            start, end = (_number(v, "outages") for v in window)
            if start < 0 or end <= start:
                raise ConfigError(
                    f"outage [{start:g}, {end:g}] must have 0 <= start < end", key="outages"
                )
            windows.append((start, end))
        object.__setattr__(self, "outages", tuple(windows))

    def in_outage(self, elapsed: float) -> bool:
        """True if ``elapsed`` seconds since start fall in an outage window."""
        return any(start <= elapsed < end for start, end in self.outages)


@dataclass(frozen=True)
class Verdict:
    """What one call suffers: a delay, then either normal service or a failure."""

    delay: float = 0.0
    status: int | None = None  # None = serve normally
    reset: bool = False  # drop the connection instead of answering
    retry_after: float | None = None
    location: str | None = None
    reason: str = ""

    @property
    def fails(self) -> bool:
        return self.reset or self.status is not None


class ChaosControl:
    """The live chaos setting of one service; read on every call, changed by tests."""

    def __init__(
        self,
        name: str,
        chaos: Chaos | None = None,
        *,
        seed: int | str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._chaos = chaos or Chaos()
        # A str seed is hashed deterministically by random.Random (unlike hash()).
        seeded = None if seed is None else f"{seed}:{name}"
        self._rng = random.Random(seeded)  # noqa: S311 - simulation, not security
        self._clock = clock
        self._started = clock()
        self._recent: deque[float] = deque()

    @property
    def chaos(self) -> Chaos:
        return self._chaos

    def set(self, chaos: Chaos) -> None:
        """Change the behaviour from the next call on."""
        self._chaos = chaos
        self._recent.clear()
        log.info("chaos for %s is now %s", self.name, chaos)

    def restart_clock(self) -> None:
        """Make outage windows count from now (done when the server starts)."""
        self._started = self._clock()

    def elapsed(self) -> float:
        """Seconds since the clock (re)started."""
        return self._clock() - self._started

    def decide(self) -> Verdict:
        """Roll the dice for one call. Outages and ``down`` win over random errors."""
        chaos = self._chaos
        delay = chaos.latency
        if chaos.jitter:
            delay = max(0.0, delay + self._rng.uniform(-chaos.jitter, chaos.jitter))
        now = self._clock()
        if chaos.down or chaos.in_outage(now - self._started):
            reason = "down" if chaos.down else "outage"
            return Verdict(delay, 503, chaos.reset, chaos.retry_after, None, reason)
        if chaos.rate_limit > 0 and not self._admit(now, chaos.rate_limit):
            retry = chaos.retry_after if chaos.retry_after is not None else 1.0
            return Verdict(delay, 429, False, retry, None, "rate limited")
        if chaos.error_rate > 0 and self._rng.random() < chaos.error_rate:
            return Verdict(
                delay, chaos.error_status, chaos.reset, chaos.retry_after, chaos.location, "error"
            )
        return Verdict(delay)

    def _admit(self, now: float, rate: float) -> bool:
        """Sliding one-second window: at most ``rate`` admitted calls in it."""
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= rate:
            return False
        self._recent.append(now)
        return True


def chaos_from_mapping(raw: Mapping[str, Any], *, file: str, section: str) -> Chaos:
    """A :class:`Chaos` from one profile table; errors name the file and ``section.key``."""
    known = {f.name for f in fields(Chaos)}
    for key in raw:
        if key not in known:
            hint = ", ".join(sorted(known))
            raise ConfigError(f"unknown key (known: {hint})", file=file, key=f"{section}.{key}")
    values = dict(raw)
    outages = values.get("outages", [])
    if not isinstance(outages, list):
        raise ConfigError("must be a list of [start, end] pairs", file=file,
                          key=f"{section}.outages")
    values["outages"] = tuple(tuple(w) if isinstance(w, list) else w for w in outages)
    try:
        return Chaos(**values)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=file, key=f"{section}.{exc.key}") from None


def load_profile(
    path: str | Path, *, known: Collection[str] | None = DEFAULT_SERVICES
) -> dict[str, Chaos]:
    """Read a chaos profile: one TOML table per service name, keys as in :class:`Chaos`.

    ``known`` lists the allowed table names (``None`` allows any), so a typo such as
    ``[geocodr]`` is an error instead of a silently well-behaved service.
    """
    file = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    profile: dict[str, Chaos] = {}
    for section, table in raw.items():
        if known is not None and section not in known:
            hint = ", ".join(sorted(known))
            raise ConfigError(f"unknown service (known: {hint})", file=file, key=section)
        if not isinstance(table, dict):
            raise ConfigError("must be a table, e.g. [geocoder]", file=file, key=section)
        profile[section] = chaos_from_mapping(table, file=file, section=section)
    return profile
