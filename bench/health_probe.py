"""Times GET /health from a process of its own until its standard input closes, then prints the
latencies (ms) as a JSON list. A probe in the load generator's own process would also time that
process's parsing of the pages it fetches; here it times only the server.

    python -m bench.health_probe BASE_URL [--interval 0.02] [--count N]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import httpx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between probes")
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: at end of input)")
    arguments = parser.parse_args()
    stop = threading.Event()
    if not arguments.count:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    samples: list[float] = []
    with httpx.Client(base_url=arguments.base_url, timeout=60) as http:
        while not stop.is_set() and (not arguments.count or len(samples) < arguments.count):
            started = time.perf_counter()
            if http.get("/health").status_code != 200:
                raise SystemExit("/health did not answer 200")
            samples.append((time.perf_counter() - started) * 1000)
            time.sleep(arguments.interval)
    print(json.dumps(samples))


if __name__ == "__main__":
    main()
