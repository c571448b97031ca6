"""The figures of ``meterdesk bench control``: latency percentiles and their breakdown, the
background load the platform actually sustained, and the lines printed for people."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from meterdesk.bench.control_load import LoadResult
from meterdesk.bench.control_results import Latencies, percentile


def seconds(value: float) -> float | None:
    """Rounded to the millisecond; None when nothing was measured (JSON has no NaN)."""
    return None if math.isnan(value) else round(value, 3)


def load_figures(results: list[LoadResult], controlled: int, window_s: float) -> dict[str, Any]:
    """What the background load achieved.

    Sustained: readings answered per second between the first and the last answer. A platform
    that keeps up answers at the offered rate; one that does not answers at its own pace from
    start to end (the publishers wait for it, and the backlog drains at that pace after they
    stop). Until sitting 19 the span ran from the first publish to the last answer, so a run
    that answered every reading at the offered 10,000/s read as ≈ 9,900: the last answer's
    latency (≈ 1 s of 80) counted as if it were lost throughput."""
    answering = [r for r in results if r.first_reply]
    first = min((r.first_reply for r in answering), default=0.0)
    last = max((r.last_reply for r in answering), default=0.0)
    answered = sum(r.answered_readings for r in results)
    sent = sum(r.readings for r in results)
    publishing = max(r.last_publish for r in results) - min(r.first_publish for r in results)
    acks = sorted(x for r in results for x in r.latencies_s)
    return {
        "background_readings_per_s": round(answered / max(last - first, 1e-9)),
        "background_offered_readings_per_s": round(sent / max(publishing, 1e-9)),
        "background_readings_answered": answered,
        "background_readings_sent": sent,
        "background_ack_p50_s": seconds(percentile(acks, 0.5)),
        "background_ack_p99_s": seconds(percentile(acks, 0.99)),
        "background_unanswered_reports": sum(r.unanswered for r in results),
        "controlled_readings_per_s": controlled,  # one reading a second from each
        "load_window_s": round(window_s, 1),
    }


def cpu_figures(results: list[LoadResult], cpu_s: dict[str, float | None]) -> dict[str, Any]:
    """Cores each party used during the load phase: the platform (the runtime's process: MQTT
    ingest, control loop, executor, poller), the publisher processes and the broker. All share
    the machine's cores, so a platform short of its target rate may be short of a core rather
    than of speed; the simulated meters' process is left out (a few hundred frames a second)."""
    phase = cpu_s.get("phase") or 0.0
    if phase <= 0:
        return {"cpu_cores": None}

    def cores(value: float | None) -> float | None:
        return None if value is None else round(value / phase, 2)

    return {
        "cpu_cores": {
            "platform": cores(cpu_s.get("platform")),
            "publishers": cores(sum(r.cpu_s for r in results)),
            "broker": cores(cpu_s.get("broker")),
            "phase_s": round(phase, 1),
        }
    }


def latency_figures(latencies: Latencies) -> dict[str, Any]:
    """p50 / p99 / max of each latency, and of each part of it."""
    figures: dict[str, Any] = {
        "trips": len(latencies.trip_s),
        "restores": len(latencies.restore_s),
        "trip_p50_s": seconds(percentile(latencies.trip_s, 0.5)),
        "trip_p99_s": seconds(percentile(latencies.trip_s, 0.99)),
        "trip_max_s": seconds(max(latencies.trip_s, default=math.nan)),
        "restore_p50_s": seconds(percentile(latencies.restore_s, 0.5)),
        "restore_p99_s": seconds(percentile(latencies.restore_s, 0.99)),
        "restore_max_s": seconds(max(latencies.restore_s, default=math.nan)),
        "crossings_by_a_poll": latencies.not_published,
        "not_measured": latencies.missing,
    }
    figures["breakdown_p50_p99_s"] = {
        name: [seconds(percentile(values, 0.5)), seconds(percentile(values, 0.99))]
        for name, values in sorted(latencies.parts.items())
    }
    return figures


def report(summary: dict[str, Any], say: Callable[[str], None]) -> None:
    """The figures for people, before the JSON line."""
    for name, ok in summary["checks"].items():
        say(f"check {name}: {'ok' if ok else 'FAILED'}")
    for reason in summary["not_measured"]:
        say(f"not measured: {reason}")
    for name, (p50, p99) in summary["breakdown_p50_p99_s"].items():
        say(f"  {name}: p50 {p50} s, p99 {p99} s")
    say(
        f"background load sustained: {summary['background_readings_per_s']:,} readings/s "
        f"(target {summary['target_readings_per_s']:,}; offered "
        f"{summary['background_offered_readings_per_s']:,}; ack p99 {summary['background_ack_p99_s']} s)"
    )
    if summary.get("cpu_cores"):
        used = summary["cpu_cores"]
        say(
            f"cores used during the load phase ({used['phase_s']} s): platform {used['platform']}, "
            f"publishers {used['publishers']}, broker {used['broker']} (of {os.cpu_count()})"
        )
    say(
        f"credit gone → trip on the wire: p50 {summary['trip_p50_s']} s, p99 "
        f"{summary['trip_p99_s']} s over {summary['trips']} trips (target p99 ≤ {summary['target_p99_s']} s)"
    )
    say(
        f"recharge → close on the wire: p50 {summary['restore_p50_s']} s, p99 "
        f"{summary['restore_p99_s']} s over {summary['restores']} restores"
    )
