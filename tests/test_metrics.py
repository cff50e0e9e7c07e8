"""The metrics endpoint (issue 14, docs/contract.md §2, `[metrics] listen`): the Prometheus text
format 0.0.4 of the agent's and the client's series, checked by the real `promtool`, and the
HTTP side under clients that an attacker or a broken scraper could be: slow, huge, many, not
HTTP. Real TCP sockets on 127.x, the daemon's Loop in this process with a fake clock for the
time limits.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import socket
import subprocess
import time

import pytest

from harness.env import loopback_block, need
from mtce import config, metrics
from mtce.clock import FakeClock
from mtce.loop import Loop


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("[::1]:9100", ("::1", 9100)),
    (" 10.1.2.3:1 ", ("10.1.2.3", 1)),
])
def test_listen_addresses(text, want):
    assert config.parse_listen(text) == want


@pytest.mark.parametrize("text", ["9100", ":9100", "127.0.0.1", "127.0.0.1:0",
                                  "127.0.0.1:65536", "::1:9100", "[127.0.0.1]:9100",
                                  "host:9100", "[::1]9100", "127.0.0.1:x"])
def test_bad_listen_addresses_are_refused(text):
    with pytest.raises(ValueError):
        config.parse_listen(text)


def test_exposition_format_help_type_labels_and_numbers():
    e = metrics.Exposition()
    e.add("mtce_x_total", "counter", "things", 3, metrics.labels(host='a"b\\c\nd'))
    e.add("mtce_x_total", "counter", "things", 4, metrics.labels(host="e"))
    e.add("mtce_y", "gauge", "a gauge", None)
    e.add("mtce_z", "gauge", "a float", 0.5)
    assert e.text() == (
        "# HELP mtce_x_total things\n# TYPE mtce_x_total counter\n"
        'mtce_x_total{host="a\\"b\\\\c\\nd"} 3\nmtce_x_total{host="e"} 4\n'
        "# HELP mtce_y a gauge\n# TYPE mtce_y gauge\nmtce_y NaN\n"
        "# HELP mtce_z a float\n# TYPE mtce_z gauge\nmtce_z 0.5\n")


def promtool_check(text: str) -> tuple[int, str]:
    need(shutil.which("promtool") is not None, "promtool (Debian's prometheus) is not installed")
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.prometheus
def test_the_agents_series_of_a_running_cluster_pass_promtool(sim):
    s = sim().start()
    s.run_until(s.all_ok, 20, what="every host ok")
    s.request(cmd="lock", host="worker-1")
    s.run(3)
    text = s.agent.series(s.clock.now(), "9.9.9")
    rc, out = promtool_check(text)
    assert rc == 0, out
    assert 'mtce_host_available{host="worker-0",personality="worker"} 1' in text
    assert 'mtce_host_locked{host="worker-1",personality="worker"} 1' in text
    assert 'mtce_host_network_up{host="worker-0",personality="worker",network="pxeboot"} 1' \
        in text
    assert 'mtce_build_info{version="9.9.9",daemon="agent"} 1' in text
    sent = [ln for ln in text.splitlines() if ln.startswith("mtce_agent_commands_sent_total")]
    assert sent and int(sent[0].split()[-1]) >= 1


def test_a_hosts_series_follow_its_inventory_entry_through_edits_and_removals(sim):
    """docs/contract.md §2 (`listen` of [metrics]), §4 (the inventory names each host and
    its personality). Issue 25: a scrape takes each host's label sets from a cache keyed by
    its name and personality. An operator renames a host, changes its personality, removes
    hosts and adds others (SIGHUP): every scrape names each host as its inventory does now,
    and the cache does not keep what the inventory no longer has."""
    s = sim().start()
    s.run_until(s.all_ok, 20, what="every host ok")

    def hosts_in(text):
        return {(m.split('host="')[1].split('"')[0], m.split('personality="')[1].split('"')[0])
                for m in text.splitlines() if m.startswith("mtce_host_available{")}

    assert hosts_in(s.agent.series(s.clock.now())) == {
        (h.hostname, h.entry.personality) for h in s.agent.table}
    inv = s.agent.cfg.agent.inventory
    lines = open(inv).read()
    for round_ in range(120):
        edited = lines.replace("worker-1", f"worker-{100 + round_}")
        if round_ % 2:
            edited = edited.replace("personality = worker", "personality = storage", 1)
        open(inv, "w").write(edited)
        s.agent.reload()
        s.settle()
        text = s.agent.series(s.clock.now())
        assert hosts_in(text) == {(h.hostname, h.entry.personality) for h in s.agent.table}
        assert f"worker-{100 + round_}" in {name for name, _ in hosts_in(text)}
    assert len(metrics._HostLabels.known) <= 2 * len(s.agent.table) + 64


@pytest.mark.prometheus
def test_the_clients_series_pass_promtool(sim):
    s = sim().start()
    s.run_until(s.all_ok, 20, what="every host ok")
    text = s.clients["worker-0"].series("9.9.9")
    rc, out = promtool_check(text)
    assert rc == 0, out
    sent = {ln.split("{")[1].split("}")[0]: int(ln.split()[-1]) for ln in text.splitlines()
            if ln.startswith("mtce_client_mtcalive_sent_total")}
    assert all(v > 0 for v in sent.values()) and len(sent) == 3, sent
    assert 'mtce_client_address_learned{address="own pxeboot"} 1' in text


# -- the HTTP side, against hostile clients ---------------------------------------------------

@pytest.fixture
def server():
    clock = FakeClock()
    loop = Loop(clock, logging.getLogger("t.metrics"))
    addr = loopback_block() + "1"
    scrapes = []

    def collect():
        scrapes.append(1)
        return "# HELP mtce_up up\n# TYPE mtce_up gauge\nmtce_up 1\n"
    srv = metrics.MetricsServer(f"{addr}:9473", loop, collect, logging.getLogger("t.metrics"),
                                clock)
    socks = []

    def connect():
        c = socket.create_connection(srv.address, timeout=5)
        socks.append(c)
        return c

    def turn(n=20):
        for _ in range(n):
            loop.run_once(0.01)
    yield srv, loop, clock, connect, turn, scrapes
    for c in socks:
        c.close()
    srv.close()
    loop.close()


def read_all(c, turn) -> bytes:
    c.settimeout(0.05)
    data = b""
    for _ in range(200):
        turn(2)
        try:
            chunk = c.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"no end of reply: {data[:200]!r}")


def test_get_metrics_is_answered_and_anything_else_is_404(server):
    srv, loop, clock, connect, turn, scrapes = server
    c = connect()
    c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = read_all(c, turn)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n" in reply
    assert reply.endswith(b"mtce_up 1\n")
    for request in (b"GET / HTTP/1.1\r\n\r\n", b"POST /metrics HTTP/1.1\r\n\r\n",
                    b"GET /metricsx HTTP/1.0\r\n\r\n"):
        c = connect()
        c.sendall(request)
        assert read_all(c, turn).startswith(b"HTTP/1.1 404 Not Found\r\n"), request
    c = connect()
    c.sendall(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")             # TLS hello, not HTTP
    assert read_all(c, turn).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert len(scrapes) == 1


def test_a_slow_client_is_dropped_and_never_holds_the_loop(server):
    srv, loop, clock, connect, turn, scrapes = server
    slow = connect()
    slow.sendall(b"GET /metr")                 # and then nothing: a slowloris
    turn()
    ok = connect()
    ok.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    assert read_all(ok, turn).startswith(b"HTTP/1.1 200")   # served while the slow one waits
    clock.advance(srv.idle_s + 0.1)
    turn()
    slow.settimeout(1)
    assert slow.recv(100) == b"", "closed after the idle limit, with nothing sent"
    assert not srv.conns


def test_a_huge_request_gets_431_and_too_many_clients_are_refused(server):
    srv, loop, clock, connect, turn, scrapes = server
    big = connect()
    big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (2 * metrics.MAX_HEADER))
    assert read_all(big, turn).startswith(b"HTTP/1.1 431")
    block = srv.address[0].rsplit(".", 1)[0] + "."
    partial = []
    for i in range(srv.max_connections):        # each from its own address, each a byte in
        c = connect_from(srv, block + str(10 + i), partial)
        c.sendall(b"G")
    turn()
    extra = connect_from(srv, block + "9", partial)
    turn()
    partial[0].settimeout(1)
    assert partial[0].recv(100) == b"", "beyond the limit the oldest unfinished one is closed"
    extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert read_all(extra, turn).startswith(b"HTTP/1.1 200"), "and the new one is served"
    assert len(srv.conns) + len(srv._writing) <= srv.max_connections


def connect_from(srv, source: str, keep: list) -> socket.socket:
    c = socket.create_connection(srv.address, timeout=5, source_address=(source, 0))
    keep.append(c)
    return c


def scrape_within(c, turn, clock, bound_s: float = 2.0) -> bytes:
    """The reply to a scrape sent on `c`, which must come within `bound_s` of real time."""
    c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    t0 = time.monotonic()
    reply = read_all(c, turn)
    assert time.monotonic() - t0 < bound_s
    return reply


@pytest.mark.parametrize("sources", [1, 4])
def test_idle_connections_held_open_never_keep_a_scrape_out(server, sources):
    """Issue 23 item 21 (docs/design.md, metrics endpoint): a dozen connections that send
    nothing, from one address or from several, and then a scrape from another address, and
    from the stranger's own: both are answered (before: 8 idle connections filled the table
    and every further scrape was closed unanswered, 4 of 65 answered)."""
    srv, loop, clock, connect, turn, scrapes = server
    block = srv.address[0].rsplit(".", 1)[0] + "."
    held = []
    for i in range(12):
        connect_from(srv, block + str(10 + i % sources), held)
        turn(2)
    assert scrape_within(connect_from(srv, block + "2", held), turn, clock) \
        .startswith(b"HTTP/1.1 200 OK")
    assert scrape_within(connect_from(srv, block + "10", held), turn, clock) \
        .startswith(b"HTTP/1.1 200 OK")
    assert len(scrapes) == 2
    assert len(srv.conns) <= srv.max_connections
    per_source = {}
    for entry in srv.conns.values():
        per_source[entry.source] = per_source.get(entry.source, 0) + 1
    assert max(per_source.values()) <= srv.max_per_source


def test_a_connection_that_sends_nothing_is_closed_at_the_first_byte_deadline(server):
    """Idle (no byte at all) is cut at `first_byte_s`; a request begun has until `idle_s`."""
    srv, loop, clock, connect, turn, scrapes = server
    assert srv.first_byte_s < srv.idle_s
    idle, begun = connect(), connect()
    begun.sendall(b"GET /met")
    turn()
    clock.advance(srv.first_byte_s + 0.01)
    turn()
    idle.settimeout(1)
    assert idle.recv(100) == b"", "nothing sent by the first byte's deadline: closed"
    assert len(srv.conns) == 1
    clock.advance(srv.idle_s - srv.first_byte_s - 0.1)
    turn()
    begun.sendall(b"rics HTTP/1.1\r\n\r\n")
    assert read_all(begun, turn).startswith(b"HTTP/1.1 200 OK")


# -- issue 23 item 21 again: strangers that keep sending, connect floods, a scraper's own address -

TURN_S = 0.1        # the agent's loop turns about this often at light load (mtce/agent_pacing.py)
GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def dial(address, source: str | None = None) -> socket.socket:
    """A connection under way to `address` (TCP from `source`, or a Unix socket's path) that
    never waits: on loopback it is made at once unless the listen queue is full (then the TCP
    handshake is retried a second later, and a Unix connect fails with EAGAIN)."""
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
    s.setblocking(False)
    err = s.connect_ex(address)
    if err not in (0, errno.EINPROGRESS):
        s.close()
        raise OSError(err, os.strerror(err))
    return s


def made(s) -> bool | None:
    """True once the connection is made, None while it is under way, False if it failed."""
    poller = select.poll()
    poller.register(s, select.POLLOUT)
    if not poller.poll(0):
        return None
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


class Strangers:
    """The attack session's connection holders, in this process: `per` connections from each of
    `sources` (None: a Unix socket's peer), each sending `first` once it is made and `trickle`
    every round after; one the server closed is opened again, at most `burst` a round (what
    arrives while the agent's loop sleeps one turn). `flood`: each connection is closed by the
    stranger in the round it was opened (a connect flood)."""

    def __init__(self, address, sources, per: int, first: bytes = b"", trickle: bytes = b"",
                 flood: bool = False, burst: int = 40):
        self.address, self.first, self.trickle = address, first, trickle
        self.flood, self.burst = flood, burst
        self.slots = [[source, None, False] for source in sources for _ in range(per)]
        self.cursor = 0
        self.opened = 0

    def round(self, burst: int | None = None) -> None:
        burst = self.burst if burst is None else burst
        for slot in self.slots:
            if slot[1] is not None and not self._keep(slot):
                slot[1].close()
                slot[1] = None
        opened = 0
        for _ in range(len(self.slots)):
            slot = self.slots[self.cursor]
            self.cursor = (self.cursor + 1) % len(self.slots)
            if slot[1] is not None or opened >= burst:
                continue
            opened += 1
            try:
                slot[1], slot[2] = dial(self.address, slot[0]), False
            except OSError:
                continue
            self.opened += 1
            if not self._keep(slot):
                slot[1].close()
                slot[1] = None
        if self.flood:
            self.close()

    def _keep(self, slot) -> bool:
        s = slot[1]
        state = made(s)
        if state is None:
            return True
        if not state:
            return False
        try:
            if s.recv(4096) == b"":
                return False
        except BlockingIOError:
            pass
        except OSError:
            return False
        try:
            if not slot[2]:
                slot[2] = True
                if self.first:
                    s.send(self.first)
            elif self.trickle:
                s.send(self.trickle)
        except OSError:
            return False
        return True

    def close(self) -> None:
        for slot in self.slots:
            if slot[1] is not None:
                slot[1].close()
                slot[1] = None


def during(strangers: Strangers, turn, clock, address, source, request: bytes,
           gap: int = 0, rounds: int = 10) -> tuple[bytes, int | None, str]:
    """A well-behaved client's request, sent whole the moment its connection is made, while
    `strangers` go on, a round (one loop turn, TURN_S of protocol time) at a time: its reply,
    the rounds it took (None: not whole within `rounds`), and what became of it. `gap`: on a
    busy host, the loop accepted the connection before its request came, and `gap` strangers'
    connections came in between."""
    s, sent, data = None, False, b""
    try:
        for n in range(1, rounds + 1):
            if s is None:
                try:
                    s = dial(address, source)
                except OSError:         # a full Unix listen queue: a client tries again
                    s = None
            if s is not None and not sent:
                state = made(s)
                if state is False:
                    return data, None, "connection failed"
                if state:
                    if gap:
                        turn(1)
                        strangers.round(burst=gap)
                        turn(1)
                    try:
                        s.sendall(request)
                    except OSError as err:  # closed by the server before its request
                        return data, None, type(err).__name__
                    sent = True
            strangers.round()
            turn(1)
            clock.advance(TURN_S)
            if not sent:
                continue
            try:
                chunk = s.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError as err:      # reset: closed by the server, unanswered
                return data, None, type(err).__name__
            if not chunk:
                return data, n, "closed"
            data += chunk
        return data, None, "no reply yet" if sent else "not connected yet (listen queue full)"
    finally:
        if s is not None:
            s.close()


def attack(srv, strangers, turn, clock, request: bytes, clients, served, warm: int = 30):
    """`warm` rounds of `strangers`, then a request from each of `clients` (source, gap) in
    turn, two rounds apart: each must be answered whole within 10 rounds (1 s of protocol
    time) with a reply for which `served(reply)`; the table's limits hold throughout."""
    address = srv.path if hasattr(srv, "path") else srv.address
    try:
        for _ in range(warm):
            strangers.round()
            turn(1)
            clock.advance(TURN_S)
        late = []
        for source, gap in clients:
            reply, rounds, what = during(strangers, turn, clock, address, source, request, gap)
            if rounds is None or not served(reply):
                late.append((source, gap, what, reply[:40]))
            for _ in range(2):
                strangers.round()
                turn(1)
                clock.advance(TURN_S)
                assert len(srv.conns) + len(srv._writing) <= srv.max_connections
                per = {}
                for entry in list(srv.conns.values()) + list(srv._writing.values()):
                    if entry.source is not None:
                        per[entry.source] = per.get(entry.source, 0) + 1
                assert max(per.values(), default=0) <= srv.max_per_source
        assert strangers.opened > len(strangers.slots), "the strangers were cut and came back"
        assert not late, f"{len(late)} of {len(clients)} requests not answered in time: {late}"
    finally:
        strangers.close()


SHAPES = {      # the attacks that blinded /metrics after the first fix: sources, per, ...
    "slowloris, 40 addresses x 2, a byte a round": (
        range(100, 140), 2, dict(first=b"GET /metrics HTTP/1.1\r\n", trickle=b"X")),
    "connect flood, 30 addresses, one byte each": (
        range(150, 180), 4, dict(first=b"G", flood=True)),
    "4 connections from the scraper's own address, a byte a round": (
        [2], 4, dict(first=b"G", trickle=b"E")),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_scrape_is_answered_whatever_strangers_keep_sending(server, shape):
    """Issue 23 item 21 (docs/design.md, the metrics endpoint; README "Observability"): a scrape
    that sends its request at once is answered within a second whatever strangers hold open
    or do, from other addresses or from its own: slowloris connections that trickle a byte
    (from 40 addresses), a flood of connections that send one byte and go (from 30), four
    from the scraper's own address; and a scrape the loop accepted before its request came,
    a stranger's connection in between. Before: each connection that had sent a byte outranked
    the freshly accepted scrape, which the next stranger evicted (0/7 answered), and the
    scraper's own address at its limit was refused (2/22)."""
    srv, loop, clock, connect, turn, scrapes = server
    block = srv.address[0].rsplit(".", 1)[0] + "."
    sources, per, kw = SHAPES[shape]
    strangers = Strangers(srv.address, [block + str(i) for i in sources], per, **kw)
    stranger = block + str(sources[0])
    clients = [(block + "2", 0), (stranger, 0), (block + "3", 1), (stranger, 1)] * 2
    attack(srv, strangers, turn, clock, GET, clients,
           lambda reply: reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"mtce_up 1\n"))


def test_scrapes_sent_with_their_connections_are_answered_in_one_turn_and_one_collection(
        server):
    """Issue 23 item 21 (docs/design.md, the metrics endpoint): a turn of the loop takes what
    the listen queue holds and answers each request that came with its connection, so a scrape
    waits for no other; the series are collected once a turn however many scrapes it answers
    (a flood of scrapes costs no more). Before: one connection accepted a turn and read the
    turn after (the agent's loop turns about 10 times a second at light load)."""
    srv, loop, clock, connect, turn, scrapes = server
    block = srv.address[0].rsplit(".", 1)[0] + "."
    held = []
    for i in range(12):
        connect_from(srv, block + str(10 + i % 4), held).sendall(GET)
    loop.run_once(0.01)
    for c in held:
        c.settimeout(0)
        reply = b""
        try:
            while chunk := c.recv(65536):
                reply += chunk
        except BlockingIOError:
            pass
        assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"mtce_up 1\n"), reply
    assert len(scrapes) == 1, "one collection for the turn's scrapes"
    assert srv.scrapes == 12
    late = connect_from(srv, block + "2", held)
    late.sendall(GET)
    loop.run_once(0.01)
    assert late.recv(65536).startswith(b"HTTP/1.1 200 OK")
    assert len(scrapes) == 2, "the next turn collects again"


def test_a_connect_flood_faster_than_the_paced_loop_is_drained_without_its_pause(server):
    """Issue 23 item 21 (docs/design.md, the metrics endpoint): at light load the agent's loop
    pauses before each turn (about 10 turns a second, mtce/agent_pacing.py), and a listen queue that
    fills within a pause drops the next handshakes, a scrape's among them (the attack session's
    connect floods: scrapes that took 2-3 s or timed out). A turn that took a full batch
    (`accepts_per_turn`) leaves the loop no pause before the next, so the queue is drained as
    fast as the loop turns, and it holds a burst. Before: one connection accepted a turn, 16
    queued at most."""
    srv, loop, clock, connect, turn, scrapes = server
    loop.pause_hint = lambda: TURN_S
    block = srv.address[0].rsplit(".", 1)[0] + "."
    queued = []
    try:
        for i in range(100):            # more than a turn takes (`accepts_per_turn`)
            queued.append(dial(srv.address, block + str(10 + i % 30)))
        flood = [c for c in queued if made(c)]
        assert len(flood) == len(queued), "a burst is queued, not dropped"
        for c in flood:
            c.sendall(GET)
        t0 = clock.now()
        loop.run_once(0.01)
        loop.run_once(0.01)
        assert clock.now() - t0 == pytest.approx(TURN_S), "one pause, not two"
        for c in flood:
            c.settimeout(0)
            try:
                reply = c.recv(65536)
            except BlockingIOError:
                reply = b""
            assert reply.startswith(b"HTTP/1.1 200 OK"), f"{flood.index(c)}: {reply!r}"
    finally:
        for c in queued:
            c.close()


@pytest.mark.parametrize("shape", ["slowloris", "connect flood"])
def test_the_control_socket_answers_whatever_strangers_keep_sending(shape):
    """Issue 23 item 21, the same server on the agent's control socket (docs/design.md): a
    request sent at once is answered within a second while 40 peers trickle a request without
    its newline, or a flood of peers send a byte and go."""
    import tempfile
    from mtce import agent_ctl
    clock = FakeClock()
    log = logging.getLogger("t.ctl.strangers")
    loop = Loop(clock, log)
    short = tempfile.mkdtemp(prefix="mtce-ctl-", dir="/tmp")
    srv = agent_ctl.Server(os.path.join(short, "agent.sock"), loop,
                           lambda req: {"ok": True, "echo": req.get("cmd")}, log, clock)

    def turn(n=1):
        for _ in range(n):
            loop.run_once(0.01)
    try:
        if shape == "slowloris":
            strangers = Strangers(srv.path, [None], 40, first=b'{"cmd": "hosts"', trickle=b" ")
        else:
            strangers = Strangers(srv.path, [None], 120, first=b"{", flood=True)
        attack(srv, strangers, turn, clock, b'{"cmd": "hosts"}\n', [(None, 0), (None, 1)] * 4,
               lambda reply: reply == b'{"ok": true, "echo": "hosts"}\n')
    finally:
        srv.close()
        loop.close()
        shutil.rmtree(short, ignore_errors=True)


def test_a_reload_moves_or_stops_the_endpoint_and_a_bad_address_is_only_logged(caplog):
    """SIGHUP applies `[metrics] listen` (agent.reload / client.reload call `use`): a new
    address moves the endpoint, empty stops it, one that cannot be had is logged and the
    daemon goes on without it."""
    clock = FakeClock()
    log = logging.getLogger("t.metrics.endpoint")
    loop = Loop(clock, log)
    block = loopback_block()
    ep = metrics.Endpoint(loop, lambda: "mtce_up 1\n", log, clock)
    try:
        ep.use(f"{block}1:9474")
        first = ep.server.address
        assert first == (f"{block}1", 9474)
        ep.use(f"{block}1:9474")
        assert ep.server.address == first, "the same address: the same server"
        ep.use(f"{block}2:9474")
        assert ep.server.address == (f"{block}2", 9474)
        with pytest.raises(OSError):
            socket.create_connection(first, timeout=1).close()
        with caplog.at_level(logging.ERROR, logger="t.metrics.endpoint"):
            ep.use("192.0.2.1:9474")              # not an address of this host
        assert ep.server is None
        assert "metrics: cannot listen on 192.0.2.1:9474" in caplog.text
        ep.use("")
        assert ep.server is None
    finally:
        ep.close()
        loop.close()


@pytest.mark.source_tree
def test_the_readme_quotes_the_network_up_help_the_agent_serves():
    """Issue 23 item 7: the state (hosts.net_state), the metric's HELP and the README say one
    thing (docs/contract.md §8 "Network state"); the README's sample scrape is the HELP."""
    import os
    from harness.env import REPO
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert f"# HELP mtce_host_network_up {metrics.NETWORK_UP_HELP}\n" in readme
    assert "pxeboot from the monitor's declared loss to its next good window" in \
        metrics.NETWORK_UP_HELP


# -- issue 23 item 8: authentication drops, by reason -----------------------------------------

def parse_series(text: str) -> dict:
    """`name{labels}` -> value, from exposition text (comments skipped)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def key_file(tmp_path, name: str, kid: str, hexkey: str) -> str:
    path = tmp_path / name
    path.write_text(f"{kid} {hexkey}\n")
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize("client_key, reason", [(None, "untagged"),
                                                (("k1", "ef" * 32), "bad_tag"),
                                                (("k9", "ab" * 32), "unknown_key")])
def test_an_agent_requiring_tags_exports_its_drops_by_reason(sim, tmp_path,
                                                                          client_key, reason):
    """Issue 23 item 8, docs/contract.md §3 "Authentication" ("each drop is counted"): an agent
    with `require = yes` and clients without the key (or with a wrong one): every host stays
    offline, and the scrape says why, per network and reason, in
    `mtce_agent_datagrams_bad_total` (the series the dashboard sums by network)."""
    agent_sec = {"security": {"key_file": key_file(tmp_path, "agent.keys", "k1", "ab" * 32),
                              "require": "yes"}}
    s = sim(workers=1, agent_extra=agent_sec, clients=["worker-0"])
    if client_key:
        w = s.files.host("worker-0")
        w.values["security"] = {"key_file": key_file(tmp_path, "client.keys", *client_key)}
        w.write_ini()
    s.start()
    s.run(5)
    assert s.hosts()["worker-0"]["availability"] == "offline"
    series = parse_series(s.agent.series(s.clock.now()))
    for net in ("mgmt", "cluster-host", "pxeboot"):
        got = series[f'mtce_agent_datagrams_bad_total{{network="{net}",reason="{reason}"}}']
        assert got > 0 or net == "pxeboot", (net, got)     # pxeboot: only once requested
        assert series[f'mtce_agent_datagrams_bad_total{{network="{net}",reason="invalid"}}'] \
            == 0
    dropped = sum(v for k, v in series.items() if k.startswith("mtce_agent_datagrams_bad_"))
    assert dropped == s.agent.counters.rx_bad == s.agent.counters.rx, \
        "every datagram was dropped, and each is in the metric"


def test_a_client_requiring_tags_exports_its_drops_by_reason(sim, tmp_path):
    """Issue 23 item 8, the client's equivalent: a client with `require = yes` and an agent
    without keys drops every request and command; `mtce_client_datagrams_bad_total` says
    `untagged`; a datagram that does not decode stays `invalid`."""
    s = sim(workers=1, clients=["worker-0"])
    w = s.files.host("worker-0")
    w.values["security"] = {"key_file": key_file(tmp_path, "c.keys", "k1", "ab" * 32),
                            "require": "yes"}
    w.write_ini()
    s.start()
    s.run(3)
    c = s.clients["worker-0"]
    series = parse_series(c.series())
    assert series['mtce_client_datagrams_bad_total{reason="untagged"}'] > 0
    assert series['mtce_client_datagrams_bad_total{reason="invalid"}'] == 0
    assert sum(v for k, v in series.items() if k.startswith("mtce_client_datagrams_bad_")) \
        == c.counters.rx_bad


def test_every_authentication_drop_has_its_own_reason_label():
    """Issue 23 item 8: each way auth.Authenticator.verify drops a datagram (docs/contract.md
    §3: no valid trailer, time more than 30 s off, already accepted) maps to its own
    `reason`, none to `other` (a renamed text would silently lose its label)."""
    from mtce import alive, auth, transport
    wall = [1_700_000_000.0]
    key, other = bytes.fromhex("ab" * 32), bytes.fromhex("cd" * 32)
    mono = [100.0]
    rx = auth.Authenticator([("k1", key)], True, lambda: wall[0], lambda: mono[0])
    data = alive.command(5, "08:00:27:00:00:01", "{}")
    signed = auth.Authenticator([("k1", key)], True, lambda: wall[0],
                                lambda: mono[0]).sign(data)
    cases = {
        "untagged": data,
        "malformed_tag": data + auth.MAGIC + b"k1 not-a-time\0",
        "unknown_key": auth.Authenticator([("k2", key)], True, lambda: wall[0],
                                          lambda: mono[0]).sign(data),
        "bad_tag": auth.Authenticator([("k1", other)], True, lambda: wall[0],
                                      lambda: mono[0]).sign(data),
        "stale": auth.Authenticator([("k1", key)], True, lambda: wall[0] - 60,
                                    lambda: mono[0]).sign(data),
    }
    for want, datagram in cases.items():
        payload, why, _ = rx.verify(datagram)
        assert payload is None and transport.auth_reason(why) == want, (want, why)
    assert rx.verify(signed)[0] is not None
    payload, why, _ = rx.verify(signed)
    assert payload is None and transport.auth_reason(why) == "replayed", why
    assert set(transport.AUTH_REASONS) == set(cases) | {"replayed", "other"}


@pytest.mark.prometheus
def test_the_failure_flag_series_pass_promtool(sim):
    """Issue 23 item 15: a host reporting every failure bit (docs/protocol.md §2.1) gives one
    `mtce_host_failure_flag` series per bit, in a scrape promtool accepts."""
    from mtce import alive
    from mtce.states import FAILURE_MASK, Net
    s = sim(clients=[]).start()
    w = s.files.host("worker-0")
    ident = alive.Identity("worker-0", "worker", w.pxeboot_ip, w.mgmt_ip, w.cluster_host_ip,
                           w.mac)
    s.net.transmit(alive.mtcalive(ident, Net.MGMT, 1, flags=0xFFFFFFFF), (w.mgmt_ip, 40999),
                   (s.files.controller.controller, 2101))
    s.settle()
    text = s.agent.series(s.clock.now())
    rc, out = promtool_check(text)
    assert rc == 0, out
    flags = [ln for ln in text.splitlines() if ln.startswith("mtce_host_failure_flag{")]
    assert len(flags) == bin(FAILURE_MASK).count("1") == 7
