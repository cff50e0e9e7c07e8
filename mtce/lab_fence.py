"""fence_mtce_lab: the fence device of `mtce lab --ha` (docs/ha.md).

A Pacemaker fence agent (the fence-agents API: options as `key=value` lines on stdin, or
`-o ACTION` / `--action=ACTION` / `-n PORT` on the command line; exit 0 for success, 1 for a
failure, `status` 0 for on and 2 for off). It powers nothing itself: like a network power
switch it asks the lab, which runs outside every controller's namespaces, to stop the
target controller's namespace. The request is a file `req-*` in the lab's fence directory;
the answer a file `<request>.done` holding JSON {"ok": bool, "why": str}. Stdlib only.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time

ANSWER_WAIT_S = 40.0           # within pacemaker's stonith-timeout (the lab sets 60 s)

METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_mtce_lab" shortdesc="mtce lab fence device">
<longdesc>The fence device of `mtce lab --ha`: asks the lab to stop the namespaces of the
target controller (the lab's stand-in for a power switch). Only for the lab.</longdesc>
<vendor-url>https://opendev.org/starlingx/metal</vendor-url>
<parameters>
  <parameter name="action" unique="0" required="1">
    <getopt mixed="-o, --action=[action]" />
    <content type="string" default="reboot" />
    <shortdesc lang="en">Fencing action</shortdesc>
  </parameter>
  <parameter name="port" unique="0" required="0">
    <getopt mixed="-n, --plug=[id]" />
    <content type="string" />
    <shortdesc lang="en">The controller to fence</shortdesc>
  </parameter>
</parameters>
<actions>
  <action name="on" />
  <action name="off" />
  <action name="reboot" />
  <action name="status" />
  <action name="monitor" />
  <action name="list" />
  <action name="metadata" />
  <action name="validate-all" />
</actions>
</resource-agent>
"""


def options(argv: list[str], stdin) -> dict:
    """The command line's options, else the `key=value` lines pacemaker writes on stdin."""
    opts: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-o", "--action") and args:
            opts["action"] = args.pop(0)
        elif arg.startswith("--action="):
            opts["action"] = arg.split("=", 1)[1]
        elif arg in ("-n", "--plug", "--port") and args:
            opts["port"] = args.pop(0)
        elif arg.startswith(("--plug=", "--port=")):
            opts["port"] = arg.split("=", 1)[1]
    if opts or stdin is None:
        return opts
    ready, _, _ = select.select([stdin], [], [], 2.0)
    if ready:
        for line in stdin.read(65536).splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key and not key.startswith("#"):
                opts[key.strip()] = value.strip()
    return opts


def target_of(opts: dict) -> str:
    return opts.get("port") or opts.get("plug") or opts.get("nodename") or ""


def ask(fence_dir: str, action: str, target: str, wait: float = ANSWER_WAIT_S) -> tuple[bool, str]:
    """One request to the lab; its answer, or (False, why) after `wait` seconds."""
    name = f"req-{time.time_ns()}-{os.getpid()}"
    path = os.path.join(fence_dir, name)
    body = {"action": action, "target": target, "requester": socket.gethostname()}
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(body, f)
    os.rename(path + ".tmp", path)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with open(path + ".done", encoding="utf-8") as f:
                answer = json.load(f)
            return bool(answer.get("ok")), str(answer.get("why", ""))
        except (OSError, ValueError):
            time.sleep(0.1)
    return False, f"the lab did not answer in {wait:g} s"


def main(fence_dir: str, argv: list[str] | None = None, stdin=None) -> int:
    opts = options(sys.argv[1:] if argv is None else argv,
                   sys.stdin if stdin is None and argv is None else stdin)
    action = opts.get("action", "reboot")
    if action == "metadata":
        sys.stdout.write(METADATA)
        return 0
    if action in ("monitor", "list", "validate-all"):
        return 0 if os.path.isdir(fence_dir) else 1
    target = target_of(opts)
    if not target:
        print("fence_mtce_lab: no target (port=, plug= or nodename=)", file=sys.stderr)
        return 1
    if action == "status":
        return 2 if os.path.exists(os.path.join(fence_dir, f"{target}.off")) else 0
    if action not in ("on", "off", "reboot"):
        print(f"fence_mtce_lab: unknown action {action!r}", file=sys.stderr)
        return 1
    ok, why = ask(fence_dir, action, target)
    print(f"fence_mtce_lab: {action} {target}: {'done' if ok else 'failed'}"
          f"{': ' + why if why else ''}", file=sys.stderr)
    return 0 if ok else 1
