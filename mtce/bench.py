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

Phases, in this order (docs/bench.md explains how to read the results):
  zipapp start-up; client start to first mtcAlive; warm-up of all hosts; steady realistic
  load (every host, every network, every period) with one host going silent (offline) and
  one host's pxeboot going silent (200.003), while the client idles; sustained fixed rate;
  capacity (the generator as fast as it can) against the agent, then against the baseline;
  a takeover: a new agent, and every host answering it at once on every network.
"""

from __future__ import annotations

import json
import multiprocessing
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

from mtce import agent_decisions, agent_pxeboot, cli_ctl, transport
from mtce.bench_gen import Generator, _baseline_main, _floor_main
from mtce.bench_lab import (
    AGENT_HOST, AgentLog, BenchError, CLIENT_HOST, CoreMeter, FULL, Layout, Plan, QUICK, _say,
    proc_cpu_s, proc_status_mib, program, udp_bound, udp_drops,
)
from mtce.bench_report import TARGETS, met, table  # noqa: F401 - TARGETS for callers
from mtce.cli import say
from mtce.states import Net

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
    def _spawn(self, mode: str, ini: str, log: str) -> subprocess.Popen:
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

    def _stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def _ctl(self, cmd: str) -> dict:
        if self.agent is not None and self.agent.poll() is not None:
            raise BenchError(f"the agent exited ({self.agent.returncode}); see its log:\n"
                             + _tail(self.layout.agent_log))
        reply = cli_ctl.request(self.layout.agent_socket, {"cmd": cmd}, timeout=30)
        if not reply.get("ok"):
            raise BenchError(f"agent refused {cmd!r}: {reply.get('error')}")
        return reply

    def _processed(self) -> int:
        return self._ctl("status")["counters"]["mtcalive"]

    def _hosts(self) -> dict:
        return {h["hostname"]: h for h in self._ctl("hosts")["hosts"]}

    def _drained(self, timeout: float = 5.0) -> int:
        """The agent's mtcAlive count once it stops moving (the socket backlog is done)."""
        last = self._processed()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self._processed()
            if now == last:
                return now
            last = now
        return last

    def close(self) -> None:
        if self.gen is not None:
            self.gen.close()
        for proc in self.procs:
            self._stop(proc)

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
        phases = Phases(self)
        phases.steady()
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
        self.agent = self._spawn("agent", self.layout.agent_ini, self.layout.agent_log)
        os.sched_setaffinity(self.agent.pid, self.agent_cpus)
        deadline = time.monotonic() + 60
        while True:
            try:
                self._ctl("status")
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
        self.client = self._spawn("client", self.layout.client_ini, self.layout.client_log)
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
            table = self._hosts()
            ready = [n for n in self.layout.names if _all_ok(table.get(n))]
            if len(ready) == p.hosts:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"only {len(ready)} of {p.hosts} hosts came online on every "
                                 f"network; agent log:\n" + _tail(self.layout.agent_log))
            time.sleep(0.5)
        # One more window so that every pxeboot monitor has had a good check.
        time.sleep(p.pxeboot_window_s)


class Phases:
    """The measured phases under load (docs/bench.md, "What it does"): steady, sustained,
    capacity and the baseline. `b` is the Bench: its plan, its processes, its result."""

    def __init__(self, bench):
        self.b = bench

    def steady(self) -> None:
        """Realistic load: CPU, and the two detections against their configured times."""
        p, r, s = self.b.plan, self.b.r, self.b.settings
        names = self.b.layout.names
        gone, pxe_gone = p.hosts // 3, (2 * p.hosts) // 3
        offline_cfg = agent_decisions.offline_after_s(s)
        pxeboot_cfg = agent_pxeboot.pxeboot_alarm_after_s(s)
        _say(f"steady load: {names[gone]} goes silent (offline expected after "
             f"{offline_cfg:g} s), {names[pxe_gone]} stops pxeboot (200.003 expected after "
             f"{pxeboot_cfg:g} s)")
        pid = self.b.agent.pid
        count0, cpu0, wall0 = self.b._processed(), proc_cpu_s(pid), time.monotonic()
        core = CoreMeter(min(self.b.agent_cpus))
        client_cpu0, client_t0 = proc_cpu_s(self.b.client.pid), time.monotonic()
        mark = self.b.log.mark()
        last_gone = max(self.b.gen.silence(gone, list(Net)).values())
        last_pxe = self.b.gen.silence(pxe_gone, [Net.PXEBOOT])[Net.PXEBOOT]
        off_rx = rf"{re.escape(names[gone])} going offline"
        alarm_rx = rf"{re.escape(names[pxe_gone])} setting \S+ 'mtcAlive' failure alarm"
        deadline = time.monotonic() + max(offline_cfg, pxeboot_cfg) + 2 * p.pxeboot_window_s + 10
        off = alarm = None
        scrapes, next_scrape = [], time.monotonic()
        while (off is None or alarm is None) and time.monotonic() < deadline:
            time.sleep(0.1)
            if time.monotonic() >= next_scrape:       # as a Prometheus server would
                next_scrape += p.scrape_every_s
                scrapes.append(self._scrape(pid))
            self.b.log.poll()
            off = off or next(iter(self.b.log.find(off_rx, mark)), None)
            alarm = alarm or next(iter(self.b.log.find(alarm_rx, mark)), None)
            if self.b.agent.poll() is not None:
                raise BenchError("the agent exited:\n" + _tail(self.b.layout.agent_log))
        wall = time.monotonic() - wall0
        cpu = proc_cpu_s(pid) - cpu0
        r["steady_others_pct"] = round(max(0.0, 100.0 * (core.busy_s() - cpu) / wall), 1)
        count = self.b._processed() - count0
        client_wall = time.monotonic() - client_t0
        client_cpu = proc_cpu_s(self.b.client.pid) - client_cpu0
        r["client_rss_mib"] = round(proc_status_mib(self.b.client.pid), 2)
        r["client_rss_peak_mib"] = round(proc_status_mib(self.b.client.pid, "VmHWM"), 2)
        r["client_idle_cpu_pct"] = round(100.0 * client_cpu / client_wall, 4)
        r["client_idle_sample_s"] = round(client_wall, 1)
        r["client_cpu_s_10min"] = round(client_cpu * 600.0 / client_wall, 3)
        self._scrape_figures(scrapes)
        r["steady_offered_rate"] = round(3 * p.hosts / p.period_s, 1)
        # What must arrive: every network of every host but the silenced ones (4 streams),
        # plus the real client's 3. The CPU figure counts only if it did.
        r["steady_expected_rate"] = round((3 * p.hosts - 4 + 3) / p.period_s, 1)
        r["steady_rate"] = round(count / wall, 1)
        r["steady_window_s"] = round(wall, 1)
        r["steady_processed"] = count
        r["cpu_pct_2000_hosts"] = round(100.0 * cpu / wall, 3)
        # The same without the CPU the scrapes took (the floor is not scraped; a Prometheus
        # server scrapes every 15 s to every minute: docs/bench.md).
        scraped = sum(sc[2] for sc in scrapes)
        r["cpu_pct_2000_hosts_unscraped"] = round(100.0 * max(0.0, cpu - scraped) / wall, 3)
        r["cpu_s_per_1000"] = round(cpu / (count / 1000.0), 5) if count else None
        r["agent_rss_mib"] = round(proc_status_mib(pid), 1)
        r["offline_configured"] = offline_cfg
        r["offline_audit_period"] = s.offline_period_s
        r["pxeboot_configured"] = pxeboot_cfg
        r["pxeboot_audit_period"] = s.pxeboot_window_s
        if off is None or alarm is None:
            raise BenchError("no detection within the time allowed: "
                             f"offline {'seen' if off else 'not seen'}, pxeboot alarm "
                             f"{'seen' if alarm else 'not seen'}; agent log:\n"
                             + _tail(self.b.layout.agent_log))
        r["offline_detect"] = round(off[0] - last_gone, 3)
        r["offline_detect_error"] = round(off[0] - last_gone - offline_cfg, 3)
        r["pxeboot_detect"] = round(alarm[0] - last_pxe, 3)
        r["pxeboot_detect_error"] = round(alarm[0] - last_pxe - pxeboot_cfg, 3)
        table = self.b._hosts()
        alarms = self.b._ctl("alarms")["alarms"]
        victim, pxe_victim = table[names[gone]], table[names[pxe_gone]]
        r["offline_confirmed"] = victim["availability"] == "offline"
        r["pxeboot_confirmed"] = (pxe_victim["networks"]["pxeboot"]["state"] == "lost" and any(
            a["id"] == "200.003" and a["host"] == names[pxe_gone] for a in alarms))
        self.b.victims = {gone, pxe_gone}
        self.b.silenced = {(gone, int(n)) for n in Net} | {(pxe_gone, int(Net.PXEBOOT))}
        false_off = {n for n in names if n not in (names[gone],)
                     and table[n]["availability"] != "online"}
        r["false_pxeboot_loss"] = sum(
            1 for n in names if n not in (names[gone], names[pxe_gone]) and
            table[n]["networks"]["pxeboot"]["state"] != "ok")
        self.b.false_offline = false_off
        self.b._stop(self.b.client)

    def _scrape(self, pid: int) -> tuple:
        """One GET /metrics of the agent: (bytes, seconds, agent CPU seconds meanwhile)."""
        import urllib.request
        cpu0, t0 = proc_cpu_s(pid), time.monotonic()
        try:
            with urllib.request.urlopen(f"http://{self.b.layout.metrics_at}/metrics",
                                        timeout=10) as reply:
                size = len(reply.read())
        except OSError:
            return (0, time.monotonic() - t0, proc_cpu_s(pid) - cpu0)
        return (size, time.monotonic() - t0, proc_cpu_s(pid) - cpu0)

    def _scrape_figures(self, scrapes: list) -> None:
        r, p = self.b.r, self.b.plan
        good = [s for s in scrapes if s[0]]
        r["scrape_every_s"] = p.scrape_every_s
        r["scrapes"] = len(scrapes)
        r["scrapes_failed"] = len(scrapes) - len(good)
        r["scrape_bytes"] = max((s[0] for s in good), default=0)
        r["scrape_s"] = round(statistics.median(s[1] for s in good), 4) if good else None
        r["scrape_cpu_s"] = round(statistics.median(s[2] for s in good), 4) if good else None

    def _seq_totals(self, table: dict) -> tuple[int, dict]:
        missed, last = 0, {}
        for i, name in enumerate(self.b.layout.names):
            nets = table[name]["networks"]
            for net in Net:
                missed += nets[net.key]["missed"]
                last[(i, int(net))] = nets[net.key]["last_seq"]
        return missed, last

    def _rate_phase(self, rate: float, duration: float) -> dict:
        """One fixed-rate (or as-fast-as-possible) phase against the agent, fully accounted."""
        pid = self.b.agent.pid
        rx = list(self.b.layout.agent_rx.values())
        missed0, _ = self._seq_totals(self.b._hosts())
        if self.b.steady_running:         # the steady schedule runs until the last moment
            self.b.steady_running = False
            late = self.b.gen.pause()["max_late_s"]
            self.b.r["generator_max_late_s"] = round(late, 3)
        count0, drops0, cpu0 = self.b._drained(), udp_drops(rx), proc_cpu_s(pid)
        core = CoreMeter(min(self.b.agent_cpus))
        gen = self.b.gen.rate(rate, duration)
        cpu = proc_cpu_s(pid) - cpu0
        others = core.busy_s() - cpu
        count = self.b._drained() - count0
        drops = udp_drops(rx) - drops0
        missed1, last = self._seq_totals(self.b._hosts())
        sent_last = self.b.gen.seqs()
        tail = sum(max(0, seq - last.get(key, 0)) for key, seq in sent_last.items()
                   if key not in self.b.silenced)
        elapsed = gen["elapsed"]
        return {"sent": gen["sent"], "errors": gen["errors"], "elapsed": elapsed,
                "gen_cpu_s": gen["cpu_s"], "processed": count, "lost": gen["sent"] - count,
                "lost_by_seq": missed1 - missed0 + tail, "kernel_drops": drops,
                "agent_cpu_s": cpu, "others_pct": round(max(0.0, 100.0 * others / elapsed), 1)}

    def sustained(self) -> None:
        p, r = self.b.plan, self.b.r
        _say(f"sustained: {p.sustained_rate:,}/s for {p.sustained_s:g} s")
        ph = self._rate_phase(p.sustained_rate, p.sustained_s)
        r["sustained_rate"] = p.sustained_rate
        r["sustained_s"] = round(ph["elapsed"], 2)
        r["sustained_sent"] = ph["sent"]
        r["sustained_processed"] = ph["processed"]
        r["sustained_offered_rate"] = round(ph["sent"] / ph["elapsed"], 1)
        r["lost"] = ph["lost"]
        r["lost_by_seq"] = ph["lost_by_seq"]
        r["kernel_drops"] = ph["kernel_drops"]
        r["sustained_cpu_pct"] = round(100.0 * ph["agent_cpu_s"] / ph["elapsed"], 1)
        r["sustained_agent_cpu_s"] = round(ph["agent_cpu_s"], 3)
        r["agent_cost_us"] = _cost_us(ph["agent_cpu_s"], ph["processed"])
        r["agent_capacity"] = round(1e6 / r["agent_cost_us"], 1) if r["agent_cost_us"] else 0.0
        r["loss_counts_agree"] = ph["lost"] == ph["lost_by_seq"] == ph["kernel_drops"]
        r["sustained_others_pct"] = ph["others_pct"]
        r["sustained_generator_cpu_pct"] = round(100.0 * ph["gen_cpu_s"] / ph["elapsed"], 1)
        self._check_false_offline()

    def _check_false_offline(self) -> None:
        table = self.b._hosts()
        names = self.b.layout.names
        victims = {names[i] for i in self.b.victims}
        self.b.false_offline |= {n for n in names if n not in victims
                               and table[n]["availability"] != "online"}
        self.b.log.poll()
        self.b.false_offline |= {m.group(1) for _, m in self.b.log.find(r"(\S+) going offline")
                               if m.group(1) in table and m.group(1) not in victims
                               and m.group(1) not in (CLIENT_HOST, AGENT_HOST)}
        self.b.r["false_offline"] = len(self.b.false_offline)

    def capacity(self) -> None:
        """The generator as fast as it can, at the agent, then at the bare loop."""
        p, r = self.b.plan, self.b.r
        _say(f"capacity: agent, {p.capacity_s:g} s")
        ph = self._rate_phase(0, p.capacity_s)
        self._check_false_offline()
        r["offered_rate"] = round(ph["sent"] / ph["elapsed"], 1)
        r["agent_rate"] = round(ph["processed"] / ph["elapsed"], 1)
        r["capacity_s"] = round(ph["elapsed"], 2)
        r["capacity_sent"] = ph["sent"]
        r["capacity_processed"] = ph["processed"]
        r["capacity_lost"] = ph["lost"]
        r["capacity_lost_by_seq"] = ph["lost_by_seq"]
        r["capacity_kernel_drops"] = ph["kernel_drops"]
        r["capacity_agent_cpu_pct"] = round(100.0 * ph["agent_cpu_s"] / ph["elapsed"], 1)
        r["agent_rate_per_cpu_s"] = round(ph["processed"] / ph["agent_cpu_s"], 1) \
            if ph["agent_cpu_s"] else None
        r["capacity_others_pct"] = ph["others_pct"]
        r["capacity_generator_cpu_pct"] = round(100.0 * ph["gen_cpu_s"] / ph["elapsed"], 1)
        self.b._stop(self.b.agent)
        _say(f"bare recvfrom_into loop at {p.sustained_rate:,}/s, {p.baseline_s:g} s")
        same = self._baseline(p.baseline_s, p.sustained_rate)
        r["baseline_cost_offered_rate"] = round(same["sent"] / same["elapsed"], 1)
        r["baseline_cost_lost"] = same["sent"] - same["received"]
        r["baseline_cost_us"] = _cost_us(same["cpu_s"], same["received"])
        r["baseline_cost_others_pct"] = round(max(0.0, 100.0 * (
            same["core_busy_s"] - same["cpu_s"]) / same["elapsed"]), 1)
        # ratio = bare cost / agent cost at the same offered load (docs/contract.md §7)
        r["ratio"] = round(r["baseline_cost_us"] / r["agent_cost_us"], 4) \
            if r["agent_cost_us"] else 0.0
        _say(f"capacity: bare recvfrom_into loop, {p.capacity_s:g} s")
        base = self._baseline(p.capacity_s)
        r["baseline_offered_rate"] = round(base["sent"] / base["elapsed"], 1)
        r["baseline_rate"] = round(base["received"] / base["elapsed"], 1)
        r["baseline_lost"] = base["sent"] - base["received"]
        r["baseline_cpu_pct"] = round(100.0 * base["cpu_s"] / base["elapsed"], 1)
        r["baseline_others_pct"] = round(max(0.0, 100.0 * (base["core_busy_s"] - base["cpu_s"])
                                             / base["elapsed"]), 1)
        r["baseline_rate_per_cpu_s"] = round(base["received"] / base["cpu_s"], 1) \
            if base["cpu_s"] else None
        # The flat-out rates, as a second figure: when the bare loop lost nothing, the
        # generator set its pace, so this is agent / offered rather than agent / bare loop.
        r["flat_out_ratio"] = round(r["agent_rate"] / r["baseline_rate"], 4) \
            if r["baseline_rate"] else 0.0
        r["baseline_generator_bound"] = r["baseline_lost"] == 0
        self.floor()

    def floor(self) -> None:
        """Issue 25's floor (recvmmsg through ctypes, 256 a call, every 100 ms; it only
        counts) at the sustained rate and at the steady rate: `floor_ratio` and
        `steady_ratio` are its cost over the agent's."""
        p, r = self.b.plan, self.b.r
        _say(f"floor: recvmmsg every 100 ms at {p.sustained_rate:,}/s, {p.baseline_s:g} s")
        fast = self._baseline(p.baseline_s, p.sustained_rate, _floor_main)
        r["floor_cost_us"] = _cost_us(fast["cpu_s"], fast["received"])
        r["floor_lost"] = fast["sent"] - fast["received"]
        r["floor_ratio"] = round(r["floor_cost_us"] / r["agent_cost_us"], 4) \
            if r["agent_cost_us"] else 0.0
        rate = 3 * p.hosts / p.period_s
        _say(f"floor: recvmmsg every 100 ms at {rate:,.0f}/s, {p.baseline_s:g} s")
        slow = self._baseline(p.baseline_s, rate, _floor_main)
        r["floor_steady_cpu_pct"] = round(100.0 * slow["cpu_s"] / slow["elapsed"], 3)
        r["floor_steady_lost"] = slow["sent"] - slow["received"]
        r["steady_ratio"] = round(r["floor_steady_cpu_pct"] / r["cpu_pct_2000_hosts"], 4) \
            if r["cpu_pct_2000_hosts"] else 0.0
        bare = r["cpu_pct_2000_hosts_unscraped"]
        r["steady_ratio_unscraped"] = round(r["floor_steady_cpu_pct"] / bare, 4) if bare else 0.0

    def takeover(self) -> None:
        """A new agent takes over (docs/contract.md §8 "Takeover"): as soon as its receive sockets
        are bound, every live host answers its mtcAlive request at once, on every network,
        while the agent is still starting. Nothing may be lost, in the kernel or after."""
        b, r = self.b, self.b.r
        rx = list(b.layout.agent_rx.values())
        _say(f"takeover: a new agent, then {b.plan.hosts:,} hosts x 3 networks at once")
        mark = b.log.mark()
        t0 = time.monotonic()
        b.agent = b._spawn("agent", b.layout.agent_ini, b.layout.agent_log)
        os.sched_setaffinity(b.agent.pid, b.agent_cpus)
        while udp_bound(rx) < len(rx):
            if b.agent.poll() is not None or time.monotonic() - t0 > 60:
                raise BenchError("the new agent did not bind its sockets:\n"
                                 + _tail(b.layout.agent_log))
            time.sleep(0.001)
        r["takeover_bind_s"] = round(time.monotonic() - t0, 3)
        t_burst = time.monotonic()
        burst = b.gen.burst()
        processed, done_at, deadline = 0, None, t_burst + 60
        while time.monotonic() < deadline:
            try:
                processed = b._processed()
            except cli_ctl.CtlError:            # its control socket comes after the sockets
                time.sleep(0.02)
                continue
            if processed >= burst["sent"]:
                done_at = time.monotonic()
                break
            time.sleep(0.05)
        if done_at is None:                 # something was lost: count what arrived
            processed = b._drained()
        r["takeover_sent"] = burst["sent"]
        r["takeover_processed"] = processed
        r["takeover_lost"] = burst["sent"] - processed
        r["takeover_kernel_drops"] = udp_drops(rx)
        r["takeover_burst_s"] = round(burst["elapsed"], 4)
        r["takeover_s"] = round(done_at - t_burst, 3) if done_at is not None else None
        b.log.poll()
        sizes = [(int(m.group(1)), int(m.group(2))) for _, m in b.log.find(
            r"Listening On: .* \((\d+) rx bytes - req:(\d+)\)", mark)]
        r["takeover_rcvbuf"] = min((got for got, _ in sizes), default=0)
        r["takeover_rcvbuf_wanted"] = max((want for _, want in sizes), default=0)
        b._stop(b.agent)

    def _baseline(self, duration: float, rate: float = 0, main=_baseline_main) -> dict:
        """A bare receiver (`main`: the per-wake recvfrom_into loop, or the floor) on the
        agent's addresses, the generator at `rate` (0: flat out) for `duration`."""
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        rx = self.b.layout.agent_rx
        addrs = [(rx[net], net != Net.PXEBOOT) for net in Net]
        proc = ctx.Process(target=main, daemon=True, name="mtce-bench-baseline",
                           args=(child, addrs, transport.agent_rcvbuf(self.b.plan.hosts + 2),
                                 self.b.agent_cpus))
        proc.start()
        child.close()
        try:
            if not parent.poll(10) or parent.recv() != "ready":
                raise BenchError("the baseline loop did not start")
            core = CoreMeter(min(self.b.agent_cpus))
            gen = self.b.gen.rate(rate, duration)
            busy = core.busy_s()
            time.sleep(0.5)
            parent.send("stop")
            if not parent.poll(10):
                raise BenchError("the baseline loop did not answer")
            got = parent.recv()
        finally:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        return {"sent": gen["sent"], "elapsed": gen["elapsed"], "core_busy_s": busy, **got}


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


def _cost_us(cpu_s: float, handled: int) -> float:
    """CPU microseconds (user + system) per datagram handled."""
    return round(1e6 * cpu_s / handled, 3) if handled else 0.0


def _median_run(argv: list, runs: int) -> float:
    subprocess.run(argv, capture_output=True, timeout=30, check=False)   # warm the caches
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, timeout=30, check=True)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 4)


def _tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


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
