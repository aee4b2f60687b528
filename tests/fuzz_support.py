"""What every fuzz target shares: its case budget, its artifact, the leak checks.

A target runs a modest number of cases in CI and at least :data:`LONG_CASES` with
``--long`` (BACKCHANNEL_TEST_LONG=1). It counts every input it tried and every input that
broke the property, and writes them to ``test-artifacts/fuzz-<target>.json`` (keys
``target``, ``cases``, ``failures``, ``mode``, plus ``seconds`` and ``budget``), also when
it fails. Hypothesis targets count shrinking attempts among the failures, so a red run's
``failures`` is "failing calls", not distinct bugs; a green run's is 0.

The targets need no XMPP server, so they run in the Prosody pass of the suite only; the
ejabberd pass (``--xmpp-server=ejabberd``) skips them instead of repeating them, unless
``--long`` asks for them explicitly.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LONG_CASES = 10_000
MAX_MESSAGE = 1000  # bounded: what a sender sent is echoed clipped (its repr may be longer)

# What must never reach a sender: a traceback, a source location, a Python exception repr.
LEAK_RE = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]*\.py\"|\.py\", line \d|"
    r"\b(?:KeyError|IndexError|AttributeError|TypeError|NameError|RecursionError|"
    r"UnboundLocalError|AssertionError|ZeroDivisionError|OverflowError|UnicodeDecodeError|"
    r"UnicodeEncodeError|JSONDecodeError|ExpatError|TOMLDecodeError)\b|"
    r"<(?:built-in|bound method|function|object) |object at 0x[0-9a-f]+"
)


def leaks(text: str) -> str | None:
    """The part of ``text`` that looks like leaked internals, or None."""
    found = LEAK_RE.search(text)
    return found.group() if found else None


@dataclass
class FuzzRun:
    """One target's tally; ``budget`` is how many cases it should try."""

    target: str
    mode: str
    budget: int
    cases: int = 0
    failures: int = 0
    examples: list[str] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)  # extra keys for the artifact
    started: float = field(default_factory=time.monotonic)

    @contextmanager
    def case(self, what: object) -> Iterator[None]:
        """One input: counted, and counted as a failure if the block raises."""
        self.cases += 1
        try:
            yield
        except BaseException:
            self.failures += 1
            if len(self.examples) < 5:
                self.examples.append(repr(what)[:300])
            raise

    def hypothesis(self, share: float = 1.0) -> settings:
        """Settings for a hypothesis property that gets ``share`` of the budget.

        CI is derandomized (the same cases every run, no flaky red) and keeps no example
        database; long mode explores afresh each time.
        """
        return settings(
            max_examples=max(1, math.ceil(self.budget * share)),
            deadline=None,
            database=None,
            derandomize=self.mode == "ci",
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )

    def write(self) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"fuzz-{self.target}.json"
        data = {"target": self.target, "cases": self.cases, "failures": self.failures,
                "mode": self.mode, "budget": self.budget,
                "seconds": round(time.monotonic() - self.started, 2)}
        data.update(self.notes)
        if self.examples:
            data["examples"] = self.examples
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path


@contextmanager
def fuzz_run(target: str, *, long_mode: bool, server_kind: str, ci_cases: int
             ) -> Iterator[FuzzRun]:
    """A :class:`FuzzRun` whose artifact is written when the block ends, however it ends."""
    if server_kind != "prosody" and not long_mode:
        pytest.skip("XMPP-free fuzz target: it runs once, in the Prosody pass")
    run = FuzzRun(target, "long" if long_mode else "ci", LONG_CASES if long_mode else ci_cases)
    try:
        yield run
    finally:
        run.write()
    if long_mode:
        assert run.cases >= run.budget, f"{target}: only {run.cases} of {run.budget} cases ran"
