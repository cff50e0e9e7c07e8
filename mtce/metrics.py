"""The Prometheus endpoint: `GET /metrics` in the text exposition format 0.0.4, served from the
daemon's own loop (`[metrics] listen` for the agent, `client_listen` for the client).

No library: the format is a few lines of text, and the one well-kept Python library for it
(prometheus_client) serves HTTP from a thread of its own, where a slow client holds a worker,
and brings a registry the daemons do not need (docs/design.md). Here the HTTP side is a
`StreamServer` (bounded request size, time and connections; never blocks the loop), and the
daemons hand in a function that returns their series when a scrape comes.
"""

from __future__ import annotations

import math
import socket

from mtce.config import parse_listen
from mtce.states import NET_KEYS
from mtce.streams import StreamServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEADER = 8 * 1024


# -- the exposition format ------------------------------------------------------------------

def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**kv) -> str:
    """`{a="x",b="y"}` (values escaped), or "" for none."""
    if not kv:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items()) + "}"


def number(value) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(round(value, 6))
    return str(int(value))


class Exposition:
    """Series by family, in the order they are declared; `text()` is the scrape's body."""

    def __init__(self):
        self._families: dict[str, list] = {}

    def family(self, name: str, kind: str, help_text: str) -> list:
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = [kind, help_text, []]
        return fam[2]

    def add(self, name: str, kind: str, help_text: str, value, label_text: str = "") -> None:
        self.family(name, kind, help_text).append(f"{name}{label_text} {number(value)}")

    def text(self) -> str:
        out = []
        for name, (kind, help_text, lines) in self._families.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(lines)
        return "\n".join(out) + "\n"


# -- the HTTP side --------------------------------------------------------------------------

def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              head: bool = False) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + \
        (b"" if head else body)


class MetricsServer(StreamServer):
    """`GET /metrics` (or `/metrics?...`) -> the series; anything else 404 (a request that is
    not HTTP: 400; larger than MAX_HEADER: 431)."""

    max_request = MAX_HEADER
    idle_s = 5.0
    reply_timeout_s = 10.0
    max_connections = 8
    what = "metrics"

    def __init__(self, listen: str, loop, collect, log, clock):
        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(self.backlog)
        except OSError:
            sock.close()
            raise
        self.collect = collect
        self.address = sock.getsockname()[:2]
        self.scrapes = 0
        self._last = None       # ((loop turn, HEAD?), reply): scrapes of one turn share it
        super().__init__(sock, loop, log, clock)

    def complete(self, buf: bytearray, chunk: bytes) -> bool:
        return b"\r\n\r\n" in buf or b"\n\n" in buf

    def too_large(self) -> bytes:
        return _response("431 Request Header Fields Too Large", b"request too large\n")

    def answer(self, raw: bytes) -> bytes:
        line = raw.split(b"\n", 1)[0].rstrip(b"\r")
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self.throttle.info(("metrics", "bad"), "metrics: not an HTTP request ; closed")
            return _response("400 Bad Request", b"bad request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target != b"/metrics" or method not in (b"GET", b"HEAD"):
            return _response("404 Not Found", b"not found; the metrics are at /metrics\n")
        key = (self.loop.turns, method == b"HEAD")
        if self._last is None or self._last[0] != key:      # once a turn, however many
            try:                                            # scrapes the turn answers
                body = self.collect().encode("utf-8")
            except Exception:   # noqa: BLE001 - a bug in a collector must not stop the daemon
                self.log.exception("metrics: collecting failed")
                return _response("500 Internal Server Error", b"internal error\n")
            self._last = (key, _response("200 OK", body, CONTENT_TYPE, head=key[1]))
        self.scrapes += 1
        return self._last[1]


# -- what the daemons export ------------------------------------------------------------------

BAD_HELP = ("datagrams dropped, by reason: invalid (does not decode, not a valid message, not "
            "for this host) or why authentication failed (untagged, malformed_tag, "
            "unknown_key, bad_tag, stale, replayed)")
# docs/contract.md §8 "Network state", as agent_host.HostMonitor.net_state decides it
NETWORK_UP_HELP = ("1 ok, 0 lost: mgmt and cluster-host after 3 online_period windows without "
                   "mtcAlive while the host is online, pxeboot from the monitor's declared loss "
                   "to its next good window (its monitor held: after 6 silent windows); absent: "
                   "unprovisioned")


class _HostLabels:
    """A host's label sets, `{host="..",personality=".."}` and the same with each network,
    made once per (hostname, personality): a scrape writes ~25 series per host (issue 25)."""

    known: dict = {}

    @classmethod
    def of(cls, hostname: str, personality: str) -> tuple[str, tuple[str, ...]]:
        found = cls.known.get((hostname, personality))
        if found is None:
            base = f'host="{_escape(hostname)}",personality="{_escape(personality)}"'
            found = cls.known[(hostname, personality)] = (
                f"{{{base}}}", tuple(f'{{{base},network="{key}"}}' for key in NET_KEYS))
        return found


def agent_series(table, counters, command_counts: dict, receive_rate: float, started_at: float,
                 now: float, version: str | None = None) -> str:
    """Every series of the agent (README, Observability), from its host `table`, its
    `counters` (transport.Counters), the operator commands' `command_counts`, the recent
    `receive_rate` and when it started (unix time); one pass over the table."""
    from mtce import __version__
    from mtce.states import FAILURE_MASK, Admin, Availability, NetState, failure_flag_names
    version = version or __version__
    e = Exposition()
    up = e.family("mtce_host_network_up", "gauge", NETWORK_UP_HELP)
    seq = e.family("mtce_host_network_last_sequence", "gauge",
                   "the last mtcAlive sequence number received (0: none since start/offline)")
    missed = e.family("mtce_host_network_missed_total", "counter",
                      "mtcAlive messages missing from sequence gaps")
    oos = e.family("mtce_host_network_out_of_sequence_total", "counter",
                   "mtcAlive messages whose sequence number was not above the last")
    seen = e.family("mtce_host_network_last_seen_seconds", "gauge",
                    "seconds since the last mtcAlive on that network (NaN: never)")
    avail = e.family("mtce_host_available", "gauge", "1 online, 0 offline")
    locked = e.family("mtce_host_locked", "gauge", "administrative state: 1 locked, 0 unlocked")
    stage = e.family("mtce_host_pxeboot_monitor_stage", "gauge",
                     "1 for the stage the host's pxeboot mtcAlive monitor is in")
    alarm = e.family("mtce_host_alarm_active", "gauge",
                     "1 while alarm 200.003 (pxeboot mtcAlive messaging failure) is active")
    misses = e.family("mtce_host_pxeboot_misses", "gauge",
                      "the pxeboot monitor's miss count (6 make a loss)")
    losses = e.family("mtce_host_pxeboot_losses", "gauge",
                      "the pxeboot monitor's loss count (2 raise 200.003)")
    failed = e.family("mtce_host_failure_flag", "gauge",
                      "1 for each failure bit of parm[2] the host's latest mtcAlive reports "
                      "(absent: not reported)")
    flaps = e.family("mtce_host_network_transitions_total", "counter",
                     "changes of the network's state, by the state changed to: ok (back from "
                     "a loss) or lost (pxeboot: the monitor's declared loss)")
    labels_of = _HostLabels.of
    if len(_HostLabels.known) > 2 * len(table) + 64:
        _HostLabels.known.clear()                     # hosts gone from the inventory
    for h in table:
        base, by_net = labels_of(h.hostname, h.entry.personality)
        for n, lab in zip(h.nets, by_net):
            state = h.net_state(n.net, now)
            if state is NetState.UNPROVISIONED:
                continue
            up.append(f"mtce_host_network_up{lab} {1 if state is NetState.OK else 0}")
            seq.append(f"mtce_host_network_last_sequence{lab} {n.last_seq}")
            missed.append(f"mtce_host_network_missed_total{lab} {n.missed}")
            oos.append(f"mtce_host_network_out_of_sequence_total{lab} {n.out_of_sequence}")
            ago = "NaN" if n.last_seen is None else repr(round(now - n.last_seen, 6))
            seen.append(f"mtce_host_network_last_seen_seconds{lab} {ago}")
            went_lost, went_ok = h.transitions(n.net)
            head = lab[:-1]
            flaps.append(f'mtce_host_network_transitions_total{head},to="lost"}} {went_lost}')
            flaps.append(f'mtce_host_network_transitions_total{head},to="ok"}} {went_ok}')
        avail.append(f"mtce_host_available{base} "
                     f"{1 if h.availability is Availability.ONLINE else 0}")
        locked.append(f"mtce_host_locked{base} {1 if h.admin is Admin.LOCKED else 0}")
        head = base[:-1]
        if h.pxeboot_monitored:
            stage.append(f'mtce_host_pxeboot_monitor_stage{head},stage="{h.pxe.stage.value}"}} 1')
            misses.append(f"mtce_host_pxeboot_misses{base} {h.pxe.miss}")
            losses.append(f"mtce_host_pxeboot_losses{base} {h.pxe.loss}")
        alarm.append(f'mtce_host_alarm_active{head},alarm="200.003",severity="minor"}} '
                     f'{1 if h.pxe.alarm else 0}')
        if h.flags & FAILURE_MASK:
            for name in failure_flag_names(h.flags):
                failed.append(f'mtce_host_failure_flag{head},flag="{name}"}} 1')
    c = counters
    for i, key in enumerate(NET_KEYS):
        lab = labels(network=key)
        e.add("mtce_agent_datagrams_received_total", "counter", "datagrams received",
              c.rx_net[i], lab)
        e.add("mtce_agent_datagrams_bad_total", "counter", BAD_HELP, c.bad_net[i],
              labels(network=key, reason="invalid"))
        for reason, count in c.auth_net[i].items():
            e.add("mtce_agent_datagrams_bad_total", "counter", BAD_HELP, count,
                  labels(network=key, reason=reason))
        e.add("mtce_agent_datagrams_unknown_source_total", "counter",
              "datagrams from an address no host owns", c.unknown_net[i], lab)
        e.add("mtce_agent_kernel_drops_total", "counter",
              "datagrams the kernel dropped on a full receive buffer", c.drops_net[i], lab)
    counts = command_counts
    e.add("mtce_agent_commands_sent_total", "counter", "operator command attempts sent",
          counts["sent"])
    e.add("mtce_agent_commands_acked_total", "counter", "operator commands ACKed",
          counts["acked"])
    e.add("mtce_agent_commands_given_up_total", "counter",
          "operator commands given up without an ACK", counts["given_up"])
    e.add("mtce_agent_mtcalive_total", "counter", "valid mtcAlive messages taken", c.mtcalive)
    e.add("mtce_agent_loop_stalls_total", "counter",
          "times the main loop found itself stalled", c.stalls)
    e.add("mtce_agent_receive_rate", "gauge", "datagrams received per second, recently",
          float(receive_rate))
    e.add("mtce_agent_start_time_seconds", "gauge", "when the agent started (unix time)",
          float(started_at))
    e.add("mtce_agent_hosts", "gauge", "hosts in the inventory", len(table))
    for key, held in table.mnfa.counts().items():
        e.add("mtce_mnfa_active", "gauge", "1 while a multi-node failure (alarm mtce.mnfa) "
              "holds the network's hosts", 0 if held is None else 1, labels(network=key))
        e.add("mtce_mnfa_hosts", "gauge", "hosts held by the network's multi-node failure",
              held or 0, labels(network=key))
    e.add("mtce_build_info", "gauge", "the running mtce", 1,
          labels(version=version, daemon="agent"))
    return e.text()


def client_series(counters, recoveries: int, own_pxeboot: str, ctrl_pxeboot: dict,
                  version: str | None = None) -> str:
    """Every series of the client (README, Observability), from its transport `counters`, its
    socket `recoveries`, its own pxeboot address and the controllers' it learned ("": not
    known)."""
    from mtce import __version__
    version = version or __version__
    e = Exposition()
    c = counters
    for i, key in enumerate(NET_KEYS):
        lab = labels(network=key)
        e.add("mtce_client_mtcalive_sent_total", "counter",
              "mtcAlive datagrams sent (one per controller on cluster-host and pxeboot)",
              c.tx_net[i], lab)
        e.add("mtce_client_send_errors_total", "counter", "sends that failed or had no socket",
              c.tx_errors_net[i], lab)
    e.add("mtce_client_commands_received_total", "counter",
          "commands for this host that passed the MAC check", c.commands)
    e.add("mtce_client_commands_refused_total", "counter",
          "commands from an address the client does not trust", c.refused)
    e.add("mtce_client_commands_acked_total", "counter", "ACKs sent", c.acks_sent)
    auth = {reason: sum(by_net[reason] for by_net in c.auth_net) for reason in c.auth_net[0]}
    e.add("mtce_client_datagrams_bad_total", "counter", BAD_HELP,
          c.rx_bad - sum(auth.values()), labels(reason="invalid"))
    for reason, count in auth.items():
        e.add("mtce_client_datagrams_bad_total", "counter", BAD_HELP, count,
              labels(reason=reason))
    e.add("mtce_client_socket_recoveries_total", "counter",
          "sockets set up again after they failed or closed", recoveries)
    learned = {"own pxeboot": own_pxeboot}
    learned.update({f"{ctl} pxeboot": ctrl_pxeboot.get(ctl)
                    for ctl in ("controller", "controller-0", "controller-1")})
    for what, present in learned.items():
        e.add("mtce_client_address_learned", "gauge",
              "1 when the address is known (own pxeboot, the controllers' pxeboot)",
              1 if present else 0, labels(address=what))
    e.add("mtce_build_info", "gauge", "the running mtce", 1,
          labels(version=version, daemon="client"))
    return e.text()


class Endpoint:
    """A daemon's endpoint, on or off by its `listen` key: started, moved by a reload, closed.
    A failure to listen is logged and the daemon goes on without it."""

    def __init__(self, loop, collect, log, clock):
        self.loop, self.collect, self.log, self.clock = loop, collect, log, clock
        self.listen = ""
        self.server: MetricsServer | None = None

    def use(self, listen: str) -> None:
        listen = (listen or "").strip()
        if listen == self.listen and (self.server is not None or not listen):
            return
        self.close()
        self.listen = listen
        if not listen:
            return
        try:
            self.server = MetricsServer(listen, self.loop, self.collect, self.log, self.clock)
        except (OSError, ValueError) as err:
            self.log.error("metrics: cannot listen on %s (%s) ; no metrics endpoint", listen,
                           getattr(err, "strerror", None) or err)
            return
        self.log.info("metrics: serving http://%s/metrics", listen)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
