"""A whole cluster in one process: the real Agent and Clients on a FakeNetwork, one Loop,
one FakeClock. Minutes of protocol run in milliseconds, every datagram is recorded, and any
address can be spoofed; nothing binds a real port or sleeps.

    sim = Sim(tmp_path, workers=2)
    sim.start()
    sim.run(10)                      # ten seconds of protocol
    sim.hosts()["worker-0"]["availability"] == "online"
"""

from __future__ import annotations

import contextlib
import logging
import os

from harness.cluster import FAST_TIMERS, Cluster
from harness.env import loopback_block

from mtce import agent as agent_mod
from mtce import client as client_mod
from mtce import alive, config, netlink
from mtce.clock import FakeClock
from mtce.fakenet import FakeNetwork
from mtce.loop import Loop
from mtce.states import Cmd, Net


class Capture(logging.Handler):
    """Every record one daemon logs, formatted as its message."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def text(self) -> str:
        return "\n".join(self.lines(logging.DEBUG))

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines(logging.DEBUG))

    def clear(self) -> None:
        self.records.clear()


def daemon_logger(name: str, level: int = logging.INFO) -> tuple[logging.Logger, Capture]:
    log = logging.getLogger(f"mtce.sim.{name}.{id(object())}")
    log.handlers[:] = []
    capture = Capture()
    log.addHandler(capture)
    log.setLevel(level)
    log.propagate = False
    return log, capture


class Sim:
    """`Cluster`'s files (controller-0 runs the agent and a client; workers run clients)."""

    def __init__(self, root, workers: int = 2, timers=None, agent_extra: dict | None = None,
                 client_extra: dict | None = None, period: float = 1.0, clients=None,
                 level: int = logging.INFO, agent: bool = True, net: str | None = None,
                 names=None):
        self.files = Cluster(root, workers=workers, net=net or loopback_block(),
                             timers=timers or FAST_TIMERS, agent_extra=agent_extra,
                             period=period, names=names)
        for host in self.files.hosts.values():
            for section, kv in (client_extra or {}).items():
                host.values.setdefault(section, {}).update(kv)
            host.write_ini()
        self.clock = FakeClock()
        self.net = FakeNetwork()
        loop_log, self.loop_capture = daemon_logger("loop")
        self.loop = Loop(self.clock, loop_log)
        self.level = level
        self.agent_log, self.agent_capture = daemon_logger("agent", level)
        self.agent = None
        self.clients: dict[str, client_mod.Client] = {}
        self.captures: dict[str, Capture] = {"agent": self.agent_capture}
        self.client_names = list(clients if clients is not None else self.files.names)
        self.with_agent = agent

    # -- building and starting ----------------------------------------------------------------
    def make_agent(self):
        cfg = config.load(self.files.agent_ini)
        return agent_mod.Agent(cfg, self.loop, self.clock, self.agent_log,
                               sockets=self.net, netlink_watch=False)

    def make_client(self, name: str):
        host = self.files.host(name)
        log, capture = daemon_logger(name, self.level)
        self.captures[name] = capture
        return client_mod.Client(config.load(host.ini), self.loop, self.clock, log,
                                 links_factory=lambda: netlink.NetlinkLinks([]),
                                 sockets=self.net, netlink_watch=False)

    def start(self, settle: float = 0.0) -> "Sim":
        if self.with_agent:
            self.agent = self.make_agent()
            self.start_agent()
        for name in self.client_names:
            self.clients[name] = self.make_client(name)
            self.clients[name].start()
        self.settle()
        if settle:
            self.run(settle)
        return self

    def start_agent(self) -> None:
        self.agent.start()
        # The agent's pause between reads (coalescing at light load) would be protocol time
        # here: protocol time moves only with run().
        self.loop.pause_hint = None

    def restart_agent(self) -> None:
        self.agent.stop()
        self.agent = self.make_agent()
        self.start_agent()
        self.settle()

    # -- running ------------------------------------------------------------------------------
    def settle(self, max_turns: int = 100000) -> None:
        """Turns until nothing is readable and no timer is due (bounded)."""
        for _ in range(max_turns):
            if not self.loop.run_once(0):
                return
        raise AssertionError(f"the loop did not settle in {max_turns} turns")

    def run(self, seconds: float, step: float = 0.05) -> None:
        """`seconds` of protocol time in `step`s: advance the clock, run what is due."""
        end = self.clock.now() + seconds
        while self.clock.now() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.now()))
            self.settle()

    def run_until(self, predicate, seconds: float, step: float = 0.05, what: str = ""):
        end = self.clock.now() + seconds
        while True:
            value = predicate()
            if value:
                return value
            if self.clock.now() >= end:
                raise AssertionError(f"not within {seconds} s of protocol time: "
                                     f"{what or predicate}")
            self.clock.advance(step)
            self.settle()

    # -- looking --------------------------------------------------------------------------------
    def hosts(self) -> dict:
        return {h["hostname"]: h for h in self.agent.table.to_json(self.clock.now())}

    def all_ok(self, names=None) -> bool:
        """Every host online, every network `ok` and heard (a network not heard yet is `ok`
        for its first windows, docs/contract.md §8)."""
        hosts = self.hosts()
        for name in names or self.client_names:
            h = hosts.get(name)
            if h is None or h["availability"] != "online" or any(
                    h["networks"][n]["state"] != "ok" or h["networks"][n]["last_seen_s"] is None
                    for n in ("mgmt", "cluster-host", "pxeboot")):
                return False
        return True

    def request(self, **req) -> dict:
        return self.agent.handle_request(req)

    def errors(self) -> list[str]:
        """Tracebacks the loop caught (a handler raised): none is ever expected."""
        return [r.getMessage() for c in [self.loop_capture, *self.captures.values()]
                for r in c.records if r.exc_info or "unexpected error" in r.getMessage()]

    def path(self, name: str, key: str) -> str:
        return self.files.host(name).paths[key]

    def exists(self, name: str, key: str, *rel: str) -> bool:
        return os.path.exists(os.path.join(self.path(name, key), *rel))

    def stop(self) -> None:
        for c in self.clients.values():
            c.stop()
            c.actions.reap()
        if self.agent is not None:
            self.agent.stop()
        self.loop.close()
        self.net.close()


@contextlib.contextmanager
def sims(tmp_path, **defaults):
    """For a fixture: `make(**kw)` builds a Sim (with `defaults`); at the end every one is
    stopped, and a traceback any of them caught fails the test."""
    made = []

    def make(**kw):
        s = Sim(tmp_path / f"sim{len(made)}", **{**defaults, **kw})
        made.append(s)
        return s

    yield make
    errors = []
    for s in made:
        errors += s.errors()
        s.stop()
    assert not errors, errors


# -- the test as the agent, for a Sim of clients alone ---------------------------------------------

CLIENT_PORT = {Net.MGMT: 2118, Net.CLSTR: 2115, Net.PXEBOOT: 2119}
AGENT_PORT = {Net.MGMT: 2101, Net.CLSTR: 2101, Net.PXEBOOT: 2102}


class Controller:
    """The test as the agent, talking to worker-0's client over the FakeNetwork."""

    def __init__(self, s: Sim, name: str = "worker-0"):
        self.s, self.name = s, name
        self.host = s.files.host(name)
        c = s.files.controller
        self.src = {Net.MGMT: c.c_mgmt[0], Net.CLSTR: c.c_clstr[0], Net.PXEBOOT: c.c_pxeboot[0]}

    def dest(self, net: Net) -> tuple:
        h = self.host
        return ({Net.MGMT: h.mgmt_ip, Net.CLSTR: h.cluster_host_ip,
                 Net.PXEBOOT: h.pxeboot_ip}[net], CLIENT_PORT[net])

    def command(self, net: Net, cmd: int, *, src=None, mac=None, num=0, parm=(), data=None):
        sent = alive.command(cmd, mac or self.host.mac, data or alive.default_data(
            self.src[Net.MGMT], net), num=num, parm=parm)
        self.send(net, sent, src)
        return sent

    def send(self, net: Net, data: bytes, src=None) -> None:
        self.s.net.transmit(data, (src or self.src[net], 41000), self.dest(net))
        self.s.settle()

    def request(self, info: dict, src=None) -> None:
        """An mtcAlive request over pxeboot with this pxebootInfo."""
        self.command(Net.PXEBOOT, Cmd.REQ_MTCALIVE, src=src, data=alive.pxeboot_info(
            info.get("controller", ""), info.get("controller-0", ""),
            info.get("controller-1", "")))

    def to_agent(self, addr: str, net: Net) -> list:
        return [d for d in self.s.net.sent + self.s.net.lost
                if d.dst == (addr, AGENT_PORT[net]) and d.src[0] in (
                    self.host.mgmt_ip, self.host.cluster_host_ip, self.host.pxeboot_ip)]

    def acks(self, addr: str, net: Net) -> list:
        return [alive.decode(d.data) for d in self.to_agent(addr, net)
                if d.data[:17] == alive.SIG_CMD_RSP]

    def listen(self, *addrs) -> None:
        """Bind the agent's receive addresses, so that what goes there is recorded as sent."""
        for addr, port in addrs:
            if (addr, port) not in self.s.net.bound:
                self.s.net.udp(addr, port)


def log(s, name="worker-0") -> Capture:
    """What one daemon of a Sim logged."""
    return s.captures[name]


class Spawns:
    """Stands in for a client's child processes: records what `[actions]` would run."""

    def __init__(self):
        self.names: list[str] = []
        self.procs: list = []

    def spawn(self, name, command, stdin=None, timeout=None):
        self.names.append(name)

    def reap(self):
        pass

    def running(self, name):
        return False


def record_actions(s, name="worker-0") -> Spawns:
    spawns = Spawns()
    s.clients[name].actions.kids = spawns
    return spawns


def set_admin_in_file(s, name, value):
    """Write `administrative = value` into host `name`'s block of Sim `s`'s inventory file."""
    text = open(s.files.inventory).read()
    head, _, tail = text.partition(f"[{name}]")
    block, sep, rest = tail.partition("\n\n")
    block = "\n".join(f"administrative = {value}" if line.startswith("administrative")
                      else line for line in block.splitlines())
    open(s.files.inventory, "w").write(head + f"[{name}]" + block + sep + rest)


def to_client(s, name, net: Net, cmd=None) -> list:
    """What the agent of Sim `s` sent to `name`'s client on `net` (lost ones too), decoded;
    only `cmd` if given."""
    from mtce import alive
    h = s.files.host(name)
    addr = {Net.MGMT: h.mgmt_ip, Net.CLSTR: h.cluster_host_ip, Net.PXEBOOT: h.pxeboot_ip}[net]
    msgs = [alive.decode(d.data) for d in s.net.sent + s.net.lost
            if d.dst == (addr, CLIENT_PORT[net])]
    return msgs if cmd is None else [m for m in msgs if m.cmd == cmd]
