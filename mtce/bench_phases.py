"""`mtce bench`'s measured phases under load (docs/bench.md, "What it does"), after the
agent and the client have started and every simulated host is online: the steady load with its
two detections, then the sustained rate, capacity against the agent and against the bare
loops (the baseline and the floor), and a takeover by a new agent.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import statistics
import time

from mtce import agent_decisions, agent_pxeboot, cli_ctl, transport
from mtce.bench_gen import _baseline_main, _floor_main
from mtce.bench_lab import (
    AGENT_HOST, BenchError, CLIENT_HOST, CoreMeter, _say, _tail, proc_cpu_s, proc_status_mib,
    udp_bound, udp_drops,
)
from mtce.states import ALARM_MNFA, Net


class Steady:
    """The steady phase: every host on every network every period, one host going silent
    (offline) and one host's pxeboot (200.003), the client idling, the agent's metrics scraped
    as a Prometheus server would. `b` is the Bench: its plan, its processes, its result; the
    hosts silenced and those falsely offline are left on it for the phases after."""

    def __init__(self, bench):
        self.b = bench

    def run(self) -> None:
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
        count0, cpu0, wall0 = self.b.processed(), proc_cpu_s(pid), time.monotonic()
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
        count = self.b.processed() - count0
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
        table = self.b.hosts()
        alarms = self.b.ctl("alarms")["alarms"]
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
        self.b.stop(self.b.client)

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


class Phases:
    """The measured phases after the steady one: sustained, capacity and the baseline, the
    floor, the takeover. `b` is the Bench: its plan, its processes, its result."""

    def __init__(self, bench):
        self.b = bench

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
        missed0, _ = self._seq_totals(self.b.hosts())
        if self.b.steady_running:         # the steady schedule runs until the last moment
            self.b.steady_running = False
            late = self.b.gen.pause()["max_late_s"]
            self.b.r["generator_max_late_s"] = round(late, 3)
        count0, drops0, cpu0 = self.b.drained(), udp_drops(rx), proc_cpu_s(pid)
        core = CoreMeter(min(self.b.agent_cpus))
        gen = self.b.gen.rate(rate, duration)
        cpu = proc_cpu_s(pid) - cpu0
        others = core.busy_s() - cpu
        count = self.b.drained() - count0
        drops = udp_drops(rx) - drops0
        missed1, last = self._seq_totals(self.b.hosts())
        sent_last = self.b.gen.seqs()
        tail = sum(max(0, seq - last.get(key, 0)) for key, seq in sent_last.items()
                   if key not in self.b.silenced)
        elapsed = gen["elapsed"]
        return {"sent": gen["sent"], "errors": gen["errors"], "elapsed": elapsed,
                "gen_cpu_s": gen["cpu_s"], "processed": count, "lost": gen["sent"] - count,
                "lost_by_seq": missed1 - missed0 + tail, "kernel_drops": drops,
                "agent_cpu_s": cpu, "others_pct": round(max(0.0, 100.0 * others / elapsed), 1)}

    def mnfa(self) -> None:
        """The controller's pxeboot side fails under the steady load (issue 27): every host's
        pxeboot mtcAlive stop at once for longer than the 200.003 bound, then flow again. The
        agent must enter one multi-node failure and leave it, raising no 200.003: its CPU
        meanwhile, against the steady figure."""
        b, p, r = self.b, self.b.plan, self.b.r
        bound = agent_pxeboot.pxeboot_alarm_after_s(b.settings)
        hold = bound + 2 * p.pxeboot_window_s
        _say(f"multi-node failure: every host's pxeboot stops for {hold:g} s, then comes back")
        pid = b.agent.pid
        mark = b.log.mark()
        cpu0, t0, wall0 = proc_cpu_s(pid), time.monotonic(), time.time()
        b.gen.mute(Net.PXEBOOT, True)
        enter = None
        while time.monotonic() - t0 < hold:
            time.sleep(0.2)
            b.log.poll()
            enter = enter or next(iter(b.log.find(r"MNFA ENTER \(pxeboot\) ; ", mark)), None)
            self._agent_alive()
        alarms = b.ctl("alarms")["alarms"]
        held = max((len(a.get("hosts", ())) for a in alarms if a["id"] == ALARM_MNFA), default=0)
        back, wall1 = time.monotonic(), time.time()
        b.gen.mute(Net.PXEBOOT, False)
        leave = None
        while leave is None and time.monotonic() - back < 10 * p.pxeboot_window_s + 10:
            time.sleep(0.2)
            b.log.poll()
            leave = next(iter(b.log.find(r"MNFA EXIT \(pxeboot\)", mark)), None)
            self._agent_alive()
        wall = time.monotonic() - t0
        r["mnfa_hosts"] = held
        r["mnfa_enter_s"] = round(enter[0] - wall0, 3) if enter else None
        r["mnfa_exit_s"] = round(leave[0] - wall1, 3) if leave else None
        r["mnfa_cpu_pct"] = round(100.0 * (proc_cpu_s(pid) - cpu0) / wall, 3)
        r["mnfa_alarms_200003"] = len(b.log.find(r"\S+ setting \S+ 'mtcAlive' failure alarm",
                                                 mark))
        if enter is None or leave is None:
            what = "not entered" if enter is None else "not left"
            raise BenchError(f"the multi-node failure was {what}; agent log:\n"
                             + _tail(b.layout.agent_log))

    def _agent_alive(self) -> None:
        if self.b.agent.poll() is not None:
            raise BenchError("the agent exited:\n" + _tail(self.b.layout.agent_log))

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
        table = self.b.hosts()
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
        self.b.stop(self.b.agent)
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
        b.agent = b.spawn("agent", b.layout.agent_ini, b.layout.agent_log)
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
                processed = b.processed()
            except cli_ctl.CtlError:            # its control socket comes after the sockets
                time.sleep(0.02)
                continue
            if processed >= burst["sent"]:
                done_at = time.monotonic()
                break
            time.sleep(0.05)
        if done_at is None:                 # something was lost: count what arrived
            processed = b.drained()
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
        b.stop(b.agent)

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


def _cost_us(cpu_s: float, handled: int) -> float:
    """CPU microseconds (user + system) per datagram handled."""
    return round(1e6 * cpu_s / handled, 3) if handled else 0.0
