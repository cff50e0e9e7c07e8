"""The confirmed pxeboot controller addresses a client keeps in `[paths] persist_dir`
(docs/contract.md §8): read at start, before any socket opens, so that a restart reopens
nothing to strangers; written when the agent confirms them. What the file says and who may
command is client_trust's; this module only reads and writes it.
"""

from __future__ import annotations

import os

from mtce import client_trust, store


class ConfirmedFile:
    """The file under `persist_dir()` (called at each use: a reload may move it)."""

    def __init__(self, persist_dir, log, throttle):
        self.persist_dir, self.log, self.throttle = persist_dir, log, throttle

    def load(self, core) -> None:
        """Give `core` (client_core.ClientCore) the kept addresses. A file that cannot be used
        is logged and fails closed: no pxeboot command is carried out until the agent
        confirms its addresses again (it does at the start-up ready event)."""
        where, name = self.persist_dir(), client_trust.CONFIRMED_FILE
        path = os.path.join(where, name)
        store.remove_stale_temps(where, name)
        try:
            confirmed = client_trust.parse_confirmed(store.read_state(path, limit=4096))
        except FileNotFoundError:
            return
        except OSError as err:
            problem = err.strerror or str(err)
        except (ValueError, RecursionError) as err:
            problem = f"bad content: {str(err)[:200]}"
        else:
            core.load_confirmed(confirmed)
            self.log.info("controller pxeboot addresses confirmed earlier: %s ; pxeboot "
                          "commands are taken only from them",
                          " ".join(sorted(core.sources.pxeboot)))
            return
        core.load_confirmed({})
        self.log.error("cannot use %s (%s) ; pxeboot commands are refused until the agent "
                       "confirms its controllers' pxeboot addresses again", path, problem)

    def save(self, addresses: dict) -> None:
        where, name = self.persist_dir(), client_trust.CONFIRMED_FILE
        try:
            store.atomic_write(where, name, client_trust.confirmed_text(addresses))
        except OSError as err:
            self.throttle.error(("confirmed", "save"), "failed to write %s (%s) ; kept in "
                                "memory only", os.path.join(where, name), err.strerror)
        else:
            self.throttle.clear(("confirmed", "save"))
