"""The serving benchmark's open-loop generator reads each response's `Server-Timing` (store and
model time) and reports the overhead per request (its latency minus its own model time)."""

from __future__ import annotations

import asyncio

import numpy as np
import uvloop

from bench.openloop import LoadResult, OpenLoop


def test_open_loop_reads_the_model_time_of_each_response() -> None:
    async def main() -> LoadResult:
        served = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    served += 1
                    timing = (
                        b"Server-Timing: store;dur=0.100, model;dur=0.250\r\n"
                        if served % 2
                        else b""
                    )
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + timing + b"\r\n{}")
                    await writer.drain()
            except asyncio.IncompleteReadError:  # the generator closed its connection
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        gen = OpenLoop(port)
        try:
            return await gen.run([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], rate=400, count=40)
        finally:
            await gen.close()
            server.close()

    result = uvloop.run(main())
    row = result.row()
    assert row["ok"] == 40 and row["errors"] == 0
    timed = result.model_ms[~np.isnan(result.model_ms)]
    assert len(timed) == 20 and np.all(timed == 0.25)  # every other response had the header
    assert row["model_p50_ms"] == row["model_p95_ms"] == row["model_p99_ms"] == 0.25
    expected = np.median((result.latency_ms - result.model_ms)[~np.isnan(result.model_ms)])
    assert row["overhead_p50_ms"] == round(float(expected), 3)
    assert row["store_p50_ms"] == 0.1
    rest = (result.latency_ms - result.model_ms - result.store_ms)[~np.isnan(result.model_ms)]
    assert row["rest_p50_ms"] == round(float(np.median(rest)), 3)
