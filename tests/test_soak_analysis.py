"""The soak script's verdicts (benchmarks.soak), on made-up samples: a leak must fail it."""

from __future__ import annotations

import os

from benchmarks.soak import Sample, analyse, descendants, sample_tree
from benchmarks.soak_stacks import parse_metrics

MIB = 1024


def series(label: str, rss_mib: list[float], fds: list[int], step: float = 10.0
           ) -> list[Sample]:
    return [Sample(i * step, label, 100, int(r * MIB), f)
            for i, (r, f) in enumerate(zip(rss_mib, fds, strict=True))]


def counters(done: list[float], step: float = 10.0) -> list[tuple[float, dict[str, float]]]:
    return [(i * step, {"events_done": d}) for i, d in enumerate(done)]


def test_flat_memory_and_fds_pass() -> None:
    # warm-up (first 60 s) may grow; after it, noise only
    rss = [100, 150, 180, 190, 200, 200, 201, 199, 200, 202, 200, 201, 200, 199, 201]
    fds = [10, 30, 38, 40, 41, 40, 42, 40, 41, 40, 42, 41, 40, 41, 40]
    reports, done, flowing = analyse(series("backchannel", rss, fds),
                                     counters([i * 50.0 for i in range(15)]),
                                     warmup=60, window=30)
    (report,) = reports
    assert report.memory_ok and report.fds_ok and flowing and done > 0
    assert abs(report.growth_pct) < 1
    assert (report.fd_min, report.fd_max) == (40, 42)


def test_steady_memory_growth_fails() -> None:
    rss = [200.0 + 5 * i for i in range(20)]  # +5 MiB every sample
    reports, _, _ = analyse(series("backchannel", rss, [40] * 20), counters([0.0] * 20),
                            warmup=30, window=30)
    assert not reports[0].memory_ok
    assert reports[0].growth_pct > 10


def test_an_fd_leak_fails_even_when_small() -> None:
    fds = [40, 40, 41, 40, 41, 42, 43, 44, 45, 46, 47, 48]  # one more every sample
    reports, _, _ = analyse(series("prosody", [20.0] * 12, fds), counters([0.0] * 12),
                            warmup=20, window=20)
    assert reports[0].memory_ok and not reports[0].fds_ok


def test_a_stalled_workload_is_reported() -> None:
    _, done, flowing = analyse(series("backchannel", [100.0] * 10, [40] * 10),
                               counters([500.0] * 10), warmup=20, window=30)
    assert done == 0 and not flowing


def test_counters_from_the_metrics_text() -> None:
    text = "\n".join([
        "# TYPE backchannel_events_done_total counter",
        'backchannel_events_done_total{status="done"} 40',
        'backchannel_events_done_total{status="deadletter"} 2',
        "backchannel_events_in_total 42",
        "backchannel_events_in_total_other 7",
        "backchannel_queue_depth 3",
        "garbage line",
    ])
    found = parse_metrics(text)
    assert found["events_done"] == 42 and found["events_in"] == 42
    assert found["queue_depth"] == 3 and found["callbacks"] == 0


def test_sampling_reads_this_process() -> None:
    assert os.getpid() in descendants(os.getpid())
    (me,) = [s for s in sample_tree(os.getpid(), 0.0) if s.pid == os.getpid()]
    assert me.label == "backchannel" and me.rss_kib > 1000 and me.fds >= 3
    assert 0 <= me.sockets <= me.fds


def test_only_the_judged_processes_count() -> None:
    samples = (series("worker", [100.0] * 10, [20] * 10)
               + series("demo site", [100.0 + 10 * i for i in range(10)], [9] * 10))
    reports, _, _ = analyse(samples, counters([0.0] * 10), warmup=20, window=20,
                            judged=("worker", "prosody"))
    verdicts = {r.label: (r.judged, r.memory_ok) for r in reports}
    assert verdicts == {"worker": (True, True), "demo site": (False, False)}
