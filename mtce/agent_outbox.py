"""Commands from the agent to hosts (docs/protocol.md §3, §4, §5.4): what each carries (the default
data, the pxebootInfo of a pxeboot mtcAlive request), where it goes on each network, and the
operator's commands (`mtce lock`, `reboot`, ...) with their retries until ACKed
(agent_commands.Commands).
"""

from __future__ import annotations

from mtce import alive
from mtce.agent_commands import CMD_ATTEMPTS, Commands
from mtce.states import PARM_LOCK_PERSIST, Admin, Cmd, Net, cmd_name

# What each operator request sends (`mtce lock HOST` ...; `mtce reboot --lazy` is lazy-reboot).
REQUESTS = {"lock": Cmd.LOCKED, "unlock": Cmd.UNLOCKED, "reboot": Cmd.REBOOT,
            "reset": Cmd.RESET, "lazy-reboot": Cmd.LAZY_REBOOT, "alive": Cmd.REQ_MTCALIVE}


class Outbox:
    """Its collaborators: the host `table`, the sockets (`net`), the `clock`, the `loop` (one
    timer for retries), the `log`, the `operator_states` kept in state_dir; `run` carries out
    the table's actions, `load_pxeboot` looks at dnsmasq.hosts again, `refresh_facts` reads the
    simplex file. What this controller is (`simplex`, `pxeboot_provisioned`) is fixed at start;
    `reconfigure(cfg)` takes `[agent] lazy_reboot_delay` from a reloaded config."""

    def __init__(self, table, net, clock, loop, log, operator_states, run, load_pxeboot,
                 refresh_facts, cfg, simplex: bool, pxeboot_provisioned: bool):
        self.table, self.net, self.clock, self.loop, self.log = table, net, clock, loop, log
        self.operator_states = operator_states
        self.run, self.load_pxeboot, self.refresh_facts = run, load_pxeboot, refresh_facts
        self.simplex, self.pxeboot_provisioned = simplex, pxeboot_provisioned
        self.lazy_reboot_delay = cfg.agent.lazy_reboot_delay
        self.commands = Commands()
        self._timer = None
        self.on_outcome = None          # told each waiter's Outcome (the control socket)

    def reconfigure(self, cfg) -> None:
        self.lazy_reboot_delay = cfg.agent.lazy_reboot_delay

    # -- what the receive path tells it ---------------------------------------------------------
    @property
    def waiting(self) -> bool:
        """Whether any command waits for an ACK or an answer."""
        return bool(self.commands.pending)

    def acked(self, hostname: str, cmd: int, net: Net, now: float) -> tuple[bool, list]:
        """An ACK of `cmd` from `hostname` over `net`: (whether a command waited for it, its
        lines to log)."""
        pending, lines = self.commands.on_ack(hostname, cmd, net, now)
        if pending:
            self.rearm()
        return pending, lines

    def answered(self, hostname: str, net: Net, now: float) -> list:
        """An mtcAlive from `hostname` over `net`: the lines of the `alive` it answers, if any."""
        answered, lines = self.commands.on_answer(hostname, net, now)
        if not answered:
            return []
        self.rearm()
        return lines

    # -- one command, one host, one network -----------------------------------------------------
    def command_data(self, net: Net, cmd: Cmd) -> str:
        """The data of `cmd` over `net` (docs/protocol.md §3); a pxeboot mtcAlive request's
        pxebootInfo goes over mgmt too, beside it (`send`)."""
        if cmd == Cmd.REQ_MTCALIVE and net == Net.PXEBOOT:
            c0, c1 = self.table.get("controller-0"), self.table.get("controller-1")
            return alive.pxeboot_info(self.net.pxeboot_ip, c0.pxeboot_ip if c0 else "",
                                      c1.pxeboot_ip if c1 else "")
        sender = {Net.MGMT: self.net.float_ip, Net.CLSTR: "", Net.PXEBOOT: self.net.pxeboot_ip}[net]
        return alive.default_data(sender, net)

    def send(self, hostname: str, net: Net, cmd: Cmd, num: int = 0, parm: tuple = ()) -> bool:
        """Send one command to one host over one network (docs/protocol.md §4)."""
        host = self.table.get(hostname)
        if host is None:
            return False
        if net == Net.MGMT:
            dest = host.entry.mgmt_ip
        elif net == Net.CLSTR:
            dest = host.clstr_ip
        else:
            if not self.pxeboot_provisioned:
                return False
            if cmd == Cmd.REQ_MTCALIVE:
                self.load_pxeboot()
            dest = host.pxeboot_ip
        text = self.command_data(net, cmd)
        if net == Net.PXEBOOT and cmd == Cmd.REQ_MTCALIVE and host.entry.mgmt_ip:
            # docs/contract.md §8: the same request over mgmt first, from the address of every mgmt
            # command: it confirms these pxeboot addresses to an mtce client, so that pxeboot
            # commands from anyone else are refused there (a C client ignores it).
            self.net.send(hostname, Net.MGMT, cmd, host.entry.mgmt_ip,
                       alive.command(cmd, host.entry.mgmt_mac, text))
        if not dest:
            if net == Net.PXEBOOT and cmd == Cmd.REBOOT:
                self.log.info("%s Pxeboot network address not learned yet ; can't reboot",
                           hostname)
            return False
        data = alive.command(cmd, host.entry.mgmt_mac, text, num=num, parm=parm)
        return self.net.send(hostname, net, cmd, dest, data)

    # -- the operator's commands -------------------------------------------------------------
    def operator(self, request: str, hostname: str) -> tuple[bool, str]:
        """lock, unlock, reboot, reset, lazy-reboot or alive for one host, from the CLI."""
        host = self.table.get(hostname)
        if host is None:
            return False, f"no such host: {hostname}"
        now = self.clock.now()
        if request == "alive":
            if not self.pxeboot_provisioned:
                return False, "pxeboot is not provisioned on this controller"
            if not host.pxeboot_ip:
                return False, f"{hostname} has no pxeboot address (dnsmasq.hosts)"
            ok, message = self.start(host, Cmd.REQ_MTCALIVE)
            return ok, (f"mtcAlive request sent to {hostname} on pxeboot" if ok
                        else "send failed (see the agent's log)")
        if request in ("lock", "unlock"):
            state = Admin.LOCKED if request == "lock" else Admin.UNLOCKED
            # docs/contract.md §4: kept in state_dir, winning over the inventory across reloads and
            # restarts until the file's `administrative` itself changes. Saved first: a lock
            # that cannot be kept is refused (nothing sent, nothing changed), or a restart
            # would bring back the inventory's value behind the operator's back.
            problem = self.operator_states.set(host.hostname, state.value,
                                            host.entry.administrative, self.clock.wall())
            if problem:
                self.log.error("%s %s refused: %s", hostname, request, problem)
                return False, (f"{hostname} not {request}ed: cannot save the operator state "
                               f"({problem}) ; nothing changed")
            self.run(host.set_admin(state, now, "operator"))
            if request == "lock":
                return self.start(host, Cmd.LOCKED, *self.lock_persist())
            return self.start(host, Cmd.UNLOCKED)
        if request not in REQUESTS:
            return False, f"unknown request {request!r}"
        if request == "lazy-reboot":
            return self.start(host, Cmd.LAZY_REBOOT, 1, (self.lazy_reboot_delay,))
        return self.start(host, REQUESTS[request])

    def watch(self, request: str, hostname: str, seconds: float) -> int:
        """A waiter for the command `operator(request, hostname)` just started; its id."""
        watch = self.commands.watch(hostname, REQUESTS[request], self.clock.now(),
                                    seconds)
        self.rearm()
        return watch

    def unwatch(self, watch: int) -> None:
        self.commands.unwatch(watch)
        self.rearm()

    def forget_host(self, hostname: str) -> None:
        """A host gone from the inventory: no more retries; its waiters are told."""
        self._tell(self.commands.forget_host(hostname))
        self.rearm()

    def _tell(self, outcomes) -> None:
        for outcome in outcomes:
            if self.on_outcome is not None:
                self.on_outcome(outcome)

    def lock_persist(self) -> tuple[int, tuple]:
        """num/parm of LOCKED: LOCK_PERSIST unless `<platform_dir>/simplex` exists
        (`M/mtcCtrlMsg.cpp:814-838`, read at the send as the original does)."""
        self.refresh_facts()
        if self.table.facts.still_simplex:
            return 0, ()
        return 1, tuple(int(i == PARM_LOCK_PERSIST) for i in range(PARM_LOCK_PERSIST + 1))

    def nets_for(self, host, cmd: Cmd) -> list[Net]:
        """Where an operator command goes, first to last (docs/protocol.md §5.4 "Operator
        commands"): REBOOT and LAZY REBOOT over pxeboot first; LOCKED over pxeboot unless the
        simplex file exists; RESET never over pxeboot (the original sends no RESET there); `alive`
        only over pxeboot."""
        if cmd == Cmd.REQ_MTCALIVE:
            return [Net.PXEBOOT] if self.pxeboot_provisioned and host.pxeboot_ip else []
        nets = []
        pxeboot = self.pxeboot_provisioned and host.pxeboot_ip and not self.simplex
        if pxeboot and (cmd in (Cmd.REBOOT, Cmd.LAZY_REBOOT) or
                        (cmd == Cmd.LOCKED and not self.table.facts.still_simplex)):
            nets.append(Net.PXEBOOT)
        nets.append(Net.MGMT)
        if host.clstr_ip and cmd != Cmd.LAZY_REBOOT:
            nets.append(Net.CLSTR)
        return nets

    def start(self, host, cmd: Cmd, num: int = 0, parm: tuple = ()) -> tuple[bool, str]:
        attempt, outcomes = self.commands.start(host.hostname, cmd, num, parm,
                                                self.clock.now())
        self._tell(outcomes)
        sent = self._attempt(attempt)
        self.rearm()
        if not sent:
            return False, f"{cmd_name(cmd)} to {host.hostname} not sent (no usable network)"
        nets = ",".join(n.iface for n in sent)
        return True, f"{cmd_name(cmd)} sent to {host.hostname} ({nets}) ; waiting for ACK"

    def _attempt(self, at) -> list[Net]:
        host = self.table.get(at.host)
        if host is None:
            self.commands.forget_host(at.host)
            return []
        sent = [net for net in self.nets_for(host, at.cmd)
                if self.send(at.host, net, at.cmd, at.num, at.parm)]
        self.log.info("%s sending '%s' request (%s) ; attempt %d of %d", at.host,
                   cmd_name(at.cmd), ",".join(n.iface for n in sent) or "none", at.attempt,
                   CMD_ATTEMPTS)
        return sent

    def cancel(self) -> None:
        """No more retries (the agent stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def rearm(self) -> None:
        """One timer, at the next command due (a retry, a give-up, an ACKed one forgotten)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.commands.next_deadline()
        if at != float("inf"):
            self._timer = self.loop.call_at(at, self._due)

    def _due(self) -> None:
        self._timer = None
        due = self.commands.due(self.clock.now())
        for line in due.lines:
            self.log.error("%s", line)
        for attempt in due.attempts:
            self._attempt(attempt)
        self._tell(due.outcomes)
        self.rearm()
