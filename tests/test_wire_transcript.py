"""Every datagram of a whole cluster's run, compared with a recording (tests/data/
wire-transcript.txt): a restructuring of the daemons must not change one byte on the wire.

The run is deterministic: one process, a FakeClock, fixed addresses (tests/harness/sim.py). It
covers start-up, steady mtcAlive on three networks, ready events and pxeboot requests, every
operator command and its ACKs, a pxeboot loss with its alarm and recovery, an offline host, and
hostile datagrams. `python3 tests/test_wire_transcript.py --write` records it again, on
purpose only.
"""

from __future__ import annotations

import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "data", "wire-transcript.txt")
NET = "127.77.1."


def transcript(root) -> list[str]:
    from mtce import alive
    from harness.sim import Sim

    s = Sim(root, workers=2, net=NET)
    lines = []
    transmit = s.net.transmit

    def record(data, src, dst):
        lines.append(f"{s.clock.now() - 1000.0:9.3f} {src[0]}>{dst[0]}:{dst[1]} {len(data)} "
                     f"{hashlib.sha256(data).hexdigest()[:24]}")
        return transmit(data, src, dst)

    s.net.transmit = record
    try:
        s.start()
        s.run(20)
        for cmd, host in (("lock", "worker-0"), ("unlock", "worker-0"), ("reboot", "worker-1"),
                          ("reset", "worker-0"), ("lazy-reboot", "worker-1"),
                          ("alive", "worker-0")):
            assert s.request(cmd=cmd, host=host)["ok"], cmd
            s.run(4)
        w1 = s.files.host("worker-1")
        s.net.drop = lambda d: d.src[0] == w1.pxeboot_ip
        s.run(40)
        s.net.drop = None
        s.run(30)
        s.clients["worker-0"].stop()                    # worker-0 goes silent: offline
        s.run(15)
        junk = alive.pack(alive.SIG_CMD_RSP, cmd=7, text="{}")
        s.net.transmit(junk, (NET + "99", 5000), (s.files.controller.controller, 2101))
        s.net.transmit(b"\0" * 30, (NET + "99", 5000), (w1.mgmt_ip, 2118))
        s.settle()
        s.run(5)
    finally:
        s.stop()
    # Within one turn of the loop, the order in which ready sockets are served is the
    # selector's; what is sent at one instant is compared as a set.
    return sorted(lines)


def test_the_wire_bytes_are_the_recorded_ones(tmp_path):
    got = transcript(tmp_path / "run")
    with open(GOLDEN, encoding="ascii") as f:
        want = f.read().splitlines()
    assert len(got) == len(want), f"{len(got)} datagrams, recorded {len(want)}"
    diff = [(a, b) for a, b in zip(got, want) if a != b]
    assert not diff, f"{len(diff)} datagrams differ, first: {diff[:3]}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python3 tests/test_wire_transcript.py --write")
    import tempfile
    sys.path.insert(0, HERE)
    sys.path.insert(0, os.path.dirname(HERE))
    with tempfile.TemporaryDirectory() as d:
        lines = transcript(d)
    with open(GOLDEN, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{GOLDEN}: {len(lines)} datagrams")
