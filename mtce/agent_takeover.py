"""What an agent that starts takes over from the one before it (docs/contract.md §8
"Takeover"), from `state_dir`, applied to its new table: the operator's locks and unlocks, what
it knew of each host (online, its client's pxeboot feature), and the active alarms, 200.003 and
mtce.mnfa (docs/protocol.md §5.5, §5.8). A file that cannot be read is one error line, never a
stop. The table's actions go to `run`.
"""

from __future__ import annotations

from mtce.states import ALARM_MNFA, ALARM_MTCALIVE, MNFA_TIMED_OUT_FACT


def restore_hosts(table, operator_states, host_facts, log, run, now: float) -> None:
    """The operator's states, then what the agent before this one knew of each host."""
    for problem in operator_states.load():
        log.error("%s", problem)
    operator_states.restore(table, now, log, run)
    for problem in host_facts.load():
        log.error("%s", problem)
    host_facts.keep_only(table.hosts)
    online = 0
    for name, host in table.hosts.items():
        facts = host_facts.get(name)
        if facts:
            host.restore(facts.get("online"), facts.get("pxeboot_feature"), now)
            online += bool(facts.get("online"))
            for net, fact in MNFA_TIMED_OUT_FACT.items():
                if facts.get(fact):
                    table.mnfa.restore_timed_out(host, net)
    if online:
        log.info("%d hosts online before this agent started ; each goes offline if silent for "
                 "one detection window", online)


def restore_alarms(table, alarms, log, run, now: float, wall: float) -> None:
    """The alarms active when the agent before this one stopped: each 200.003 resumes its
    host's loss state; each mtce.mnfa holds its hosts again, its timeout counted from when it
    was raised."""
    problem = alarms.load()
    if problem:
        log.error("%s", problem)
    active = [a.host for a in alarms.active() if a.id == ALARM_MTCALIVE]
    if active:
        run(table.restore_alarms(active, now))
    for alarm in [a for a in alarms.active() if a.id == ALARM_MNFA]:
        raised = alarm.raised_wall()
        run(table.restore_mnfa(alarm.network, alarm.hosts,
                               wall - raised if raised is not None else 0.0, now, alarm.host))
