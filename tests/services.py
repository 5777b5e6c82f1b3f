"""The real backing servers of the test suites, started when they are down.

The machines run PostgreSQL, MariaDB, Redis, RabbitMQ and NATS (JetStream); a fresh machine or
a test that stopped one may leave it down. `ensure("postgres")` starts it with the command the
machine notes give and waits until its port answers, so every suite (and `.ci/run`) starts what
it needs. `python tests/services.py NAME...` does the same from a shell.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass

START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Service:
    host: str
    port: int
    start: str


SERVICES: dict[str, Service] = {
    "postgres": Service(
        "127.0.0.1", 5432, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    ),
    "mysql": Service(
        "127.0.0.1", 3306, "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
    ),
    "redis": Service(
        "127.0.0.1",
        6379,
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
        " --dir /var/lib/redis --logfile /var/log/redis/ci.log",
    ),
    "rabbitmq": Service("127.0.0.1", 5672, "rabbitmq-server -detached"),
    "nats": Service(
        "127.0.0.1",
        4222,
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server --"
        " -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
    ),
}


def is_up(name: str) -> bool:
    service = SERVICES[name]
    try:
        with socket.create_connection((service.host, service.port), timeout=1.0):
            return True
    except OSError:
        return False


def ensure(name: str) -> None:
    """Start the service if its port does not answer; raise if it is still down after a while."""
    if is_up(name):
        return
    service = SERVICES[name]
    subprocess.run(service.start, shell=True, check=False, capture_output=True, timeout=START_TIMEOUT_S)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if is_up(name):
            return
        time.sleep(0.25)
    raise RuntimeError(f"{name} did not come up on {service.host}:{service.port} with: {service.start}")


if __name__ == "__main__":
    for arg in sys.argv[1:] or sorted(SERVICES):
        ensure(arg)
        print(f"{arg}: up")
