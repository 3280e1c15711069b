"""One process of SSE clients for bench.realtime: connects N streams, prints "ready", then prints the
latency of every delivery (ms, JSON list) once each stream has received the expected events."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import AsyncExitStack
from datetime import datetime

from clinicsync.realtime.reader import EventStream, open_stream


async def _listen(stream: EventStream, expected: int, latencies: list[float]) -> None:
    for _ in range(expected):
        message = await stream.next_event(timeout=120)
        arrived = time.time()
        latencies.append((arrived - datetime.fromisoformat(message.json["created_at"]).timestamp()) * 1000)


async def main(base_url: str, token: str, clients: int, expected: int) -> None:
    latencies: list[float] = []
    async with AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(open_stream(base_url, token)) for _ in range(clients)]
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.gather(*(_listen(stream, expected, latencies) for stream in streams))
    sys.stdout.write(json.dumps(latencies) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
