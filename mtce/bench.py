"""`mtce bench`: the performance benchmark of docs/contract.md §7, on loopback, in bounded time.

Everything measured is a real process: the agent (`mtce agent -f`) with an inventory of
simulated hosts, a real `mtce client`, a load generator of several forked processes, and a
bare `recvfrom_into` loop as the baseline. Every file lives in one temporary directory, removed
at the end; every `[actions]` command is `true`; traffic goes only to 127.x addresses.

The generator gives each simulated host its own mgmt, cluster-host and pxeboot address
(127.252/253/254.x.y) and sends from them without binding one socket per address: `sendmsg`
with an IP_PKTINFO source, which Linux accepts for any local address, and all of 127/8 is
local. Each (host, network) stream keeps one datagram built by `alive.mtcalive` and patches
its sequence number (parm[3] and the JSON "sequence") in place, so per-host sequence numbers
increase by one and the agent's `missed` counters prove any loss.

Phases, in this order (docs/bench.md explains how to read the results; those after the
warm-up are `bench_phases`'):
  zipapp start-up; client start to first mtcAlive; warm-up of all hosts; steady realistic
  load (every host, every network, every period) with one host going silent (offline) and
  one host's pxeboot going silent (200.003), while the client idles; sustained fixed rate;
  capacity (the generator as fast as it can) against the agent, then against the baseline;
  a takeover: a new agent, and every host answering it at once on every network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

from mtce import cli_ctl
from mtce.bench_gen import Generator
from mtce.bench_lab import (
    AgentLog, BenchError, CLIENT_HOST, FULL, Layout, Plan, QUICK, _say, _tail, proc_status_mib,
    program,
)
from mtce.bench_phases import Phases, Steady
from mtce.bench_report import met, table
from mtce.cli import say


class Bench:
    def __init__(self, plan: Plan, root: str):
        self.plan = plan
        self.root = root
        self.prog = program()
        self.layout = Layout(root, plan)
        self.settings = self.layout.settings()
        cpus = sorted(os.sched_getaffinity(0))
        self.cpus = len(cpus)
        self.agent_cpus = {cpus[-1]}
        self.gen_cpus = set(cpus[:-1]) or set(cpus)
        self.gen_processes = max(2, len(self.gen_cpus))
        if len(cpus) > 1:               # this process and the client stay off the agent's core
            os.sched_setaffinity(0, self.gen_cpus)
        self.r: dict = {}
        self.procs: list[subprocess.Popen] = []
        self.gen: Generator | None = None
        self.agent: subprocess.Popen | None = None
        self.log = AgentLog(self.layout.agent_log)

    # -- processes ------------------------------------------------------------------------
    def spawn(self, mode: str, ini: str, log: str) -> subprocess.Popen:
        argv = self.prog + [mode, "-c", ini, "-f"]
        profile_dir = os.environ.get("MTCE_BENCH_PROFILE")
        if profile_dir and len(self.prog) == 2 and self.prog[1].endswith((".py", ".pyz")):
            # docs/bench.md: the daemons under cProfile (slower: figures are not comparable)
            argv = [self.prog[0], "-m", "cProfile", "-o",
                    os.path.join(os.path.abspath(profile_dir), f"{mode}.prof")] + argv[1:]
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def ctl(self, cmd: str) -> dict:
        if self.agent is not None and self.agent.poll() is not None:
            raise BenchError(f"the agent exited ({self.agent.returncode}); see its log:\n"
                             + _tail(self.layout.agent_log))
        reply = cli_ctl.request(self.layout.agent_socket, {"cmd": cmd}, timeout=30)
        if not reply.get("ok"):
            raise BenchError(f"agent refused {cmd!r}: {reply.get('error')}")
        return reply

    def processed(self) -> int:
        return self.ctl("status")["counters"]["mtcalive"]

    def hosts(self) -> dict:
        return {h["hostname"]: h for h in self.ctl("hosts")["hosts"]}

    def drained(self, timeout: float = 5.0) -> int:
        """The agent's mtcAlive count once it stops moving (the socket backlog is done)."""
        last = self.processed()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.processed()
            if now == last:
                return now
            last = now
        return last

    def close(self) -> None:
        if self.gen is not None:
            self.gen.close()
        for proc in self.procs:
            self.stop(proc)

    # -- phases -----------------------------------------------------------------------------
    def run(self) -> dict:
        t0 = time.monotonic()
        p, r = self.plan, self.r
        r["hosts"] = p.hosts
        r["period_s"] = p.period_s
        r["cpus"] = self.cpus
        r["python"] = sys.version.split()[0]
        r["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
        self.pyz_startup()
        self.start_agent()
        self.client_start()
        self.warm_up()
        Steady(self).run()
        phases = Phases(self)
        phases.mnfa()
        phases.sustained()
        phases.capacity()
        phases.takeover()
        r["duration"] = round(time.monotonic() - t0, 1)
        return r

    def pyz_startup(self) -> None:
        """`python3 mtce.pyz --version`, median of several runs after one warm-up run."""
        r = self.r
        pyz, note = self._find_pyz()
        r["pyz_startup"] = None
        r["pyz_startup_note"] = note
        argv = [sys.executable, "-c", "pass"]
        r["python_startup"] = _median_run(argv, self.plan.pyz_runs)
        if pyz is None:
            return
        _say(f"timing {pyz} --version")
        r["pyz_startup"] = _median_run([sys.executable, pyz, "--version"], self.plan.pyz_runs)
        r["pyz_startup_note"] = (f"{os.path.basename(sys.executable)} {pyz} --version, median "
                                 f"of {self.plan.pyz_runs}")

    def _find_pyz(self) -> tuple[str | None, str]:
        for arg in self.prog:
            if arg.endswith(".pyz") and os.path.isfile(arg):
                return arg, ""
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.isfile(here) and zipfile.is_zipfile(here):
            return here, ""
        built = os.path.join(here, "dist", "mtce.pyz")
        stale = os.path.isfile(built) and os.path.getmtime(built) < _newest_source(here)
        if os.path.isfile(built) and not stale:
            return built, ""
        tool = os.path.join(here, "tools", "build_pyz.py")
        if not os.path.isfile(tool):
            return None, "no dist/mtce.pyz and no tools/build_pyz.py to build it"
        out = os.path.join(self.root, "mtce.pyz")
        _say("building a zipapp with tools/build_pyz.py"
             + (" (dist/mtce.pyz is older than the source)" if stale else ""))
        try:
            proc = subprocess.run([sys.executable, tool, "-o", out], capture_output=True,
                                  text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return None, "tools/build_pyz.py did not finish in 300 s"
        if proc.returncode != 0 or not os.path.isfile(out):
            why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"tools/build_pyz.py failed: {why}"
        return out, ""

    def start_agent(self) -> None:
        _say(f"starting the agent with {self.plan.hosts} simulated hosts "
             f"({' '.join(self.prog)})")
        self.agent = self.spawn("agent", self.layout.agent_ini, self.layout.agent_log)
        os.sched_setaffinity(self.agent.pid, self.agent_cpus)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.ctl("status")
                break
            except cli_ctl.CtlError:
                if time.monotonic() > deadline:
                    raise BenchError("the agent did not answer within 60 s:\n"
                                     + _tail(self.layout.agent_log)) from None
                time.sleep(0.1)
        self.r["agent_rss_start_mib"] = round(proc_status_mib(self.agent.pid), 1)

    def client_start(self) -> None:
        """A real client on an idle machine: start to first mtcAlive at the agent."""
        _say("starting a client")
        mark = self.log.mark()
        started = time.time()
        self.client = self.spawn("client", self.layout.client_ini, self.layout.client_log)
        first: dict[str, float] = {}
        deadline = time.monotonic() + 15
        while len(first) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            self.log.poll()
            for t, m in self.log.find(rf"({re.escape(CLIENT_HOST)}) mtcAlive received from "
                                      r"(\w+) network", mark):
                first.setdefault(m.group(2), t - started)
        if not first:
            raise BenchError("the client's first mtcAlive never reached the agent:\n"
                             + _tail(self.layout.client_log))
        r = self.r
        r["first_mtcalive"] = round(min(first.values()), 3)
        r["first_mtcalive_by_network"] = {k: round(v, 3) for k, v in sorted(first.items())}
        self.client_first_at = time.monotonic()

    def warm_up(self) -> None:
        """Generator processes start their hosts (ready event, then every period); wait until
        the agent has every host online and ok on all three networks."""
        p = self.plan
        _say(f"{self.gen_processes} generator processes, {p.hosts} hosts x 3 networks every "
             f"{p.period_s:g} s")
        self.gen = Generator(self.layout, self.gen_processes, self.gen_cpus)
        self.gen.steady(p)
        self.steady_running = True
        deadline = time.monotonic() + 3 * p.period_s + 2 * p.pxeboot_window_s + 30
        time.sleep(2 * p.period_s + 0.5)
        while True:
            table = self.hosts()
            ready = [n for n in self.layout.names if _all_ok(table.get(n))]
            if len(ready) == p.hosts:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"only {len(ready)} of {p.hosts} hosts came online on every "
                                 f"network; agent log:\n" + _tail(self.layout.agent_log))
            time.sleep(0.5)
        # One more window so that every pxeboot monitor has had a good check.
        time.sleep(p.pxeboot_window_s)


def _newest_source(tree: str) -> float:
    """The mtime of the newest Python source the zipapp is built from."""
    paths = [os.path.join(tree, "mtce.py")] + [
        os.path.join(tree, "mtce", n) for n in os.listdir(os.path.join(tree, "mtce"))
        if n.endswith(".py")]
    return max((os.path.getmtime(p) for p in paths if os.path.isfile(p)), default=0.0)


def _all_ok(h: dict | None) -> bool:
    """Online, every network `ok` and heard (not yet heard is `ok` for its first windows)."""
    return bool(h) and h["availability"] == "online" and all(
        n["state"] == "ok" and n["last_seen_s"] is not None for n in h["networks"].values())


def _median_run(argv: list, runs: int) -> float:
    subprocess.run(argv, capture_output=True, timeout=30, check=False)   # warm the caches
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, timeout=30, check=True)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 4)


def main(args) -> int:
    if getattr(args, "scale", False):
        from mtce import bench_scale
        return bench_scale.main(args)
    plan = QUICK if getattr(args, "quick", False) else FULL
    root = tempfile.mkdtemp(prefix="mtce-bench-")
    bench = None
    try:
        bench = Bench(plan, root)
        result = bench.run()
    except (BenchError, cli_ctl.CtlError) as err:
        print(f"mtce bench: {err}", file=sys.stderr)
        return 1
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(root, ignore_errors=True)
    result["met"] = met(result)
    if args.json:
        print(table(result), file=sys.stderr)   # the same run, for a human reading along
        say(json.dumps(result, indent=1))
    else:
        say(table(result))
    return 0
