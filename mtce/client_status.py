"""What a client says about itself in each mtcAlive: health, the "I am" flags, and the
per-network sequence numbers (docs/protocol.md §2.1, §6).

The flags come from files under `[paths] platform_dir` and `run_dir`, read at every build as the
original does (no fork: the LUKS probe is not run, see docs/design.md).
"""

from __future__ import annotations

import logging
import os

from mtce import alive
from mtce.states import Flag, Health, Net

SM_UNHEALTHY_DEBOUNCE = 6      # mtcAlive builds with .sm_node_unhealthy before the flag
_UINT32 = 1 << 32


class Status:
    """Sequence numbers and flags of one client; `build` consumes a number."""

    def __init__(self, paths, personality: str, log: logging.Logger):
        self.paths = paths
        self.personality = personality
        self.log = log
        self.seq = {net: 0 for net in Net}
        # The original debounces per interface in an array one slot too small (pxeboot
        # overflows it); three counters here.
        self.sm_unhealthy = {net: 0 for net in Net}

    def reconfigure(self, paths) -> None:
        """A reload: the flags are read from the new `[paths]` from now on."""
        self.paths = paths

    def _has(self, where: str, name: str) -> bool:
        return os.path.exists(os.path.join(where, name))

    def health_and_flags(self, net: Net) -> tuple[int, int]:
        run, plat = self.paths.run_dir, self.paths.platform_dir
        has = self._has
        flags = Flag(0)
        health = Health.UNKNOWN
        if has(plat, ".initial_config_complete"):
            flags |= Flag.I_AM_CONFIGURED
        if has(run, ".config_fail"):
            flags |= Flag.I_AM_NOT_HEALTHY
            health = Health.UNHEALTHY
        if has(run, ".config_pass"):
            flags |= Flag.I_AM_HEALTHY
            health = Health.HEALTHY
        if has(run, ".node_locked"):
            flags |= Flag.I_AM_LOCKED
        worker_done = "worker" in self.personality.split(",") and \
            has(run, ".worker_config_complete")
        if worker_done:
            flags |= Flag.SUBF_CONFIGURED
        if has(run, "goenabled"):
            flags |= Flag.MAIN_GOENABLED
        if worker_done and has(run, "goenabled_subf") and not has(run, "goenabled_subf_failed"):
            flags |= Flag.SUBF_GOENABLED
        if has(run, ".sm_degraded"):
            flags |= Flag.SM_DEGRADED
        if has(run, "patch_installing"):
            flags |= Flag.PATCHING
        if has(run, "node_is_patched"):
            flags |= Flag.PATCHED
        if has(run, ".sm_node_unhealthy"):
            count = self.sm_unhealthy[net]
            if count < SM_UNHEALTHY_DEBOUNCE:
                self.sm_unhealthy[net] = count + 1
                self.log.info("SM Unhealthy debounce %d of %d (%s)", count + 1,
                              SM_UNHEALTHY_DEBOUNCE, net.iface)
            else:
                if count == SM_UNHEALTHY_DEBOUNCE:
                    self.sm_unhealthy[net] = count + 1
                    self.log.info("SM Unhealthy flag set (%s)", net.iface)
                flags |= Flag.SM_UNHEALTHY
        else:
            self.sm_unhealthy[net] = 0
        return int(health), int(flags)

    def build(self, identity: alive.Identity, net: Net, uptime: int) -> bytes:
        """The network's next mtcAlive: the sequence number is pre-incremented, so the first
        after a start is 1, and it is consumed even if the message is then not sent."""
        self.seq[net] = (self.seq[net] + 1) % _UINT32
        health, flags = self.health_and_flags(net)
        return alive.mtcalive(identity, net, self.seq[net], uptime=uptime, health=health,
                              flags=flags)
