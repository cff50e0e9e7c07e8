"""Socket helpers: the receive drain and the kernel's drop counter."""

from __future__ import annotations

import socket

from mtce import transport


def test_kernel_drops_counts_what_a_full_buffer_dropped():
    rx = transport.udp_socket("127.0.0.1", 0, rcvbuf=4096)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert transport.kernel_drops(rx) == 0
        for _ in range(300):
            tx.sendto(b"x" * 300, rx.getsockname())
        drops = transport.kernel_drops(rx)
        received = transport.Receiver(batch=1000).drain(rx, lambda data, src: None)
        assert drops > 0 and drops + received == 300
    finally:
        rx.close()
        tx.close()


def test_drain_is_bounded_by_the_batch_and_reports_oversize_lengths():
    rx = transport.udp_socket("127.0.0.1", 0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for size in (10, 1100, 1500):
            tx.sendto(b"y" * size, rx.getsockname())
        for _ in range(60):
            tx.sendto(b"z", rx.getsockname())
        seen = []
        assert transport.Receiver(batch=50).drain(rx, lambda d, s: seen.append(len(d))) == 50
        assert seen[:3] == [10, 1100, 1500], "longer than 1060 is seen, not truncated to it"
        assert transport.Receiver(batch=50).drain(rx, lambda d, s: seen.append(len(d))) == 13
    finally:
        rx.close()
        tx.close()
