"""One HostMonitor driven by plain floats for `now` (FakeClock style), for the tests of the
agent's host state (test_agent_seqs/presence/pxeboot/locks/host/table.py): minutes of
protocol time in milliseconds."""

from __future__ import annotations

from mtce.agent_decisions import Send, Settings
from mtce.agent_host import HostMonitor
from mtce.agent_table import HostTable
from mtce.config import HostEntry, Inventory
from mtce.decisions import Log
from mtce.states import Admin, Cmd, Flag, Net

T0 = 1000.0
FEATURES = ["pxeboot_mtcAlive"]
PXE_IP = "192.168.202.50"
LOCKED = int(Flag.I_AM_LOCKED)


def entry(name="worker-0", n=50, clstr=True, admin="unlocked", personality="worker"):
    return HostEntry(name, personality, f"08:00:27:1e:0a:{n % 256:02x}", f"192.168.204.{n}",
                     f"192.168.206.{n}" if clstr else "", admin)


def make(now=T0, settings=None, pxe=PXE_IP, **kw) -> HostMonitor:
    return HostMonitor(entry(**kw), settings or Settings(), now, pxeboot_ip=pxe)


def sends(actions, net=None, cmd=None):
    return [a for a in actions if isinstance(a, Send)
            and (net is None or a.net is net) and (cmd is None or a.cmd is cmd)]


def texts(actions, level=None):
    return [a.text for a in actions if isinstance(a, Log) and (level is None or a.level == level)]


def online(host, now=T0, seqs=(1, 1, 1), nets=tuple(Net)):
    """Bring `host` online with one mtcAlive per network; returns the actions."""
    out = []
    for net, seq in zip(nets, seqs):
        out += host.on_mtcalive(net, seq, 0, 12, now)
    return out


class Sim:
    """One host, driven in fixed steps: mtcAlive every `period` s on the networks `alive` allows.

    At each step the due messages are delivered first, then `audit(now)` runs. Every action is
    recorded with its time.
    """

    def __init__(self, host, start, period=5.0, step=1.0):
        self.host, self.t, self.period, self.step = host, start, period, step
        self.seq = {net: host.nets[net].last_seq for net in Net}
        self.next = {net: start + period for net in Net}
        self.log = []                       # (t, action)

    def record(self, actions):
        self.log += [(self.t, a) for a in actions]

    def deliver(self, net, seq=None):
        self.seq[net] = self.seq[net] + 1 if seq is None else seq
        flags = LOCKED if self.host.admin is Admin.LOCKED else 0     # a client that agrees
        self.record(self.host.on_mtcalive(net, self.seq[net], flags, 12, self.t))

    def run(self, until, alive=lambda net, t: True):
        while self.t < until - 1e-9:
            self.t = round(self.t + self.step, 6)
            for net in Net:
                if self.t >= self.next[net] - 1e-9:
                    self.next[net] += self.period
                    if alive(net, self.t):
                        self.deliver(net)
            self.record(self.host.audit(self.t))

    def at(self, kind, net=None, cmd=None):
        return [t for t, a in self.log if isinstance(a, kind)
                and (net is None or getattr(a, "net", None) is net)
                and (cmd is None or getattr(a, "cmd", None) is cmd)]

    def texts(self, start=-1.0, end=1e18):
        return [(t, a.text) for t, a in self.log if isinstance(a, Log) and start <= t <= end]


def table_of(n, settings=None, now=T0, **kw):
    table = HostTable(settings or Settings(), **kw)
    inv = Inventory("<test>", {f"worker-{i}": entry(f"worker-{i}", 10 + i) for i in range(n)})
    table.apply_inventory(inv, now)
    return table


def monitored(start=T0, **kw):
    host = make(now=start, **kw)
    online(host, start, seqs=(1, 1), nets=(Net.MGMT, Net.CLSTR))
    ready = host.on_ready(FEATURES, start)
    assert sends(ready, Net.PXEBOOT, Cmd.REQ_MTCALIVE)
    return host


def alarmed(start=T0):
    host = monitored(start)
    sim = Sim(host, start)
    sim.record(host.audit(start))
    sim.run(start + 120, alive=lambda net, t: net is not Net.PXEBOOT)
    assert host.pxe.alarm
    return host, sim


class TableSim:
    """Hosts of one HostTable driven in fixed steps, as `Sim` drives one host: each host sends an
    mtcAlive every `period` s (phases spread over the period) on the networks `alive(name, net,
    t)` allows, then the table audits. Every host is online and its pxeboot monitor runs (its
    client announced the feature). Every action is recorded with its time."""

    def __init__(self, n, settings, start=T0, period=1.0, step=0.1, agent_host="controller-0"):
        self.table = table_of(n, settings, now=start, agent_host=agent_host)
        self.t, self.period, self.step = start, period, step
        self.names = list(self.table.hosts)
        self.seq = {(h, net): 0 for h in self.names for net in Net}
        self.next = {h: start + period * i / n for i, h in enumerate(self.names)}
        self.log = []                       # (t, action)
        self.alive = lambda name, net, t: True
        for i, name in enumerate(self.names):
            self.record(self.table.set_pxeboot_ip(name, f"192.168.202.{10 + i}", start))
            host = self.table.hosts[name]
            for net in Net:
                self.deliver(name, net)
            self.record(host.on_ready(FEATURES, start))
        self.record(self.table.audit(start))

    def record(self, actions):
        self.log += [(self.t, a) for a in actions]

    def deliver(self, name, net):
        self.seq[name, net] += 1
        host = self.table.hosts[name]
        flags = LOCKED if host.admin is Admin.LOCKED else 0
        self.record(host.on_mtcalive(net, self.seq[name, net], flags, 12, self.t))

    def run(self, seconds):
        until = self.t + seconds
        while self.t < until - 1e-9:
            self.t = round(self.t + self.step, 6)
            for name in self.names:
                if self.t >= self.next[name] - 1e-9:
                    self.next[name] += self.period
                    for net in Net:
                        if self.alive(name, net, self.t):
                            self.deliver(name, net)
            self.record(self.table.audit(self.t))

    def actions(self, kind, start=-1.0):
        return [a for t, a in self.log if isinstance(a, kind) and t >= start]

    def texts(self, needle=""):
        return [a.text for _, a in self.log if isinstance(a, Log) and needle in a.text]
