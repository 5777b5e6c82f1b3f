"""A worker beside the bindingd sidecar: uses its bindings, then reads the daemon's metrics.

It finds the daemon through BINDINGD_ENDPOINT (set in docker-compose.yml) and prints one line
per step, so `docker compose logs worker` shows what happened."""

from __future__ import annotations

import os
import urllib.request

from bindingd_client import connect_sync


def main() -> None:
    with connect_sync() as env:
        env.CACHE.put("visits", str(int(env.CACHE.get("visits") or "0") + 1))
        print(f"visits: {env.CACHE.get('visits')}", flush=True)
        env.JOBS.send({"job": "resize", "image": "a.jpg"})
        print(f"greeting: {env.GREETING}", flush=True)
    url = os.environ.get("METRICS_URL")
    if url:
        with urllib.request.urlopen(url, timeout=5) as answer:
            lines = [
                line
                for line in answer.read().decode().splitlines()
                if line.startswith("bindingd_calls_total{")
            ]
        print(f"metrics: {len(lines)} bindingd_calls_total series", flush=True)


if __name__ == "__main__":
    main()
