"""A burst sender for tests and the lab: N mtcAlive for one host at a given rate.

    python3 tests/harness/burst.py SRC DST PORT HOSTNAME MAC COUNT RATE [FIRST_SEQ] [SKIP]

Sequence numbers start at FIRST_SEQ (default 1); SKIP (default 0) leaves that many numbers
out once, half-way, so a test can check that the agent counts the gap.
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.environ.get("MTCE_PATH", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))

from mtce import alive  # noqa: E402
from mtce.states import Net  # noqa: E402


def main(argv):
    src, dst, port, hostname, mac, count, rate = argv[:7]
    first = int(argv[7]) if len(argv) > 7 else 1
    skip = int(argv[8]) if len(argv) > 8 else 0
    count, rate, port = int(count), float(rate), int(port)
    ident = alive.Identity(hostname, "worker", "", src, "", mac)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    start = time.monotonic()
    seq = first
    for i in range(count):
        if skip and i == count // 2:
            seq += skip
        sock.sendto(alive.mtcalive(ident, Net.MGMT, seq), (dst, port))
        seq += 1
        due = start + (i + 1) / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    took = time.monotonic() - start
    print(f"sent {count} in {took:.2f} s ({count / took:.0f}/s) last seq {seq - 1}")


if __name__ == "__main__":
    main(sys.argv[1:])
