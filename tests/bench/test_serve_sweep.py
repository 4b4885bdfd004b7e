"""The serving benchmark's sweep runs a step (and a repeat of the target rate) again when the
generator itself fell behind its schedule (the machine stalled it, so the step did not offer its
rate), at most STALLED_RETRIES times, and the report names the stalled runs."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench import serve_bench, serve_report


class _Step:
    """What `load_step` returns, as far as the sweep reads it (`row()`)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self._row = row

    def row(self) -> dict[str, Any]:
        return self._row


def _row(rate: float, send_lag: float, p99: float) -> dict[str, Any]:
    return {
        "rate": rate, "sent": 10, "ok": 10, "errors": 0, "error_kinds": {}, "achieved_rps": rate,
        "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": p99, "max_ms": p99, "server_cpu_ms_per_req": 1.0,
        "client_cpu_ms_per_req": 0.1, "send_lag_p99_ms": send_lag, "other_cores": 0.0,
    }  # fmt: skip


def test_a_stalled_step_is_run_again_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    stall = serve_bench.STALLED_SEND_LAG_MS * 10
    script = {  # per rate, the runs the generator would measure, in order
        100.0: [_row(100, 1.0, 3.0)],
        300.0: [  # stalled once, then fine; its repeat the same
            *(_row(300, stall, 200.0), _row(300, 1.2, 2.5)),
            *(_row(300, stall, 150.0), _row(300, 1.1, 2.1)),
        ],
        500.0: [_row(500, stall, 90.0)] * (serve_bench.STALLED_RETRIES + 1),  # always stalled
    }
    calls: list[float] = []

    def load_step(port: int, pid: int, payloads: list[bytes], rate: float, *rest: Any) -> _Step:
        calls.append(rate)
        return _Step(_row(rate, 1.0, 2.0) if len(calls) == 1 else script[rate].pop(0))

    monkeypatch.setattr(serve_bench, "load_step", load_step)
    monkeypatch.setattr(serve_bench.time, "sleep", lambda s: None)
    args = argparse.Namespace(rates=[100.0, 300.0, 500.0], duration=1.0, target_repeats=2)
    out = serve_bench.rate_sweep(0, 0, [b""], args, None)

    retries = serve_bench.STALLED_RETRIES
    assert calls == [100.0, 100.0, 300.0, 300.0, *[500.0] * (retries + 1), 300.0, 300.0]
    assert out["target_repeats"] == [2.5, 2.1]
    assert [r["p99_ms"] for r in out["target_repeats_stalled_runs"]] == [150.0]
    rows = out["load"]
    assert [r["p99_ms"] for r in rows] == [3.0, 2.5, 90.0]
    assert "stalled_runs" not in rows[0]
    assert [r["p99_ms"] for r in rows[1]["stalled_runs"]] == [200.0]
    assert len(rows[2]["stalled_runs"]) == serve_bench.STALLED_RETRIES  # the last run is kept
    note = serve_report.render_sweep(out)[-1]
    assert "300 req/s (generator send lag p99" in note and "service p99 200.0 ms" in note
    assert note.count("500 req/s") == serve_bench.STALLED_RETRIES
    assert "300 req/s, a repeat (generator send lag p99" in note and "service p99 150.0" in note
