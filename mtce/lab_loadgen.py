"""A stress sender for `mtce lab --scenario burst`: mtcAlive for one host at a set rate.

It speaks for a host that is in the agent's inventory but has no client: real mtcAlive
datagrams (built by `mtce.alive`, as a client builds them) from that host's mgmt address to
the agent, numbered 1..count, paced in small batches so that a few thousand a second cost
little CPU. It prints one JSON line with what it did, which the lab compares with the agent's
counters. Imports no daemon machinery; stdlib plus `alive` and `states`.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from mtce import alive
from mtce.states import Net

BATCH = 10          # datagrams sent back to back between two pacing checks


def send(src: str, dst: str, port: int, hostname: str, mac: str, count: int,
         rate: float, first_seq: int = 1) -> dict:
    """Send `count` mtcAlive at `rate` per second; returns sent, seconds, rate, last_seq."""
    ident = alive.Identity(hostname, "worker", "", src, "", mac.lower())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    errors = 0
    try:
        sock.bind((src, 0))
        start = time.monotonic()
        seq = first_seq
        sent = 0
        while sent < count:
            for _ in range(min(BATCH, count - sent)):
                try:
                    sock.sendto(alive.mtcalive(ident, Net.MGMT, seq), (dst, port))
                except BlockingIOError:
                    errors += 1
                    continue
                seq += 1
                sent += 1
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        took = max(time.monotonic() - start, 1e-6)
    finally:
        sock.close()
    return {"sent": sent, "seconds": round(took, 3), "rate": round(sent / took, 1),
            "last_seq": seq - 1, "errors": errors}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mtce-loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--src", required=True, help="source address (the host's mgmt address)")
    p.add_argument("--dst", required=True, help="the agent's mgmt address")
    p.add_argument("--port", type=int, default=2101)
    p.add_argument("--host", required=True, help="hostname in the mtcAlive")
    p.add_argument("--mac", required=True, help="mgmt MAC in the mtcAlive")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--lab", default="", help="the lab directory (marks the process as the "
                   "lab's; unused otherwise)")
    a = p.parse_args(argv)
    try:
        result = send(a.src, a.dst, a.port, a.host, a.mac, a.count, a.rate)
    except OSError as err:
        print(json.dumps({"error": f"{a.src} -> {a.dst}:{a.port}: {err.strerror or err}"}))
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
