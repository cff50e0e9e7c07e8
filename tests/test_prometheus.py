"""The metrics endpoint under the real Prometheus server (issue 14): Debian's `prometheus`
scrapes a real agent and a real client on 127.x every second; its HTTP API must show the
series with the right values, and a host that goes offline must show availability 0 within
two scrape intervals of the agent saying so. `promtool` checks the endpoint's output, the
alert rules (with series of their own) and the dashboard's queries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from harness.cluster import Cluster
from harness.env import REPO, need, wait_until

pytestmark = [pytest.mark.loopback, pytest.mark.prometheus]

SCRAPE_S = 1.0
RULES = os.path.join(REPO, "etc", "prometheus", "mtce-rules.yml")
RULE_TESTS = os.path.join(REPO, "etc", "prometheus", "mtce-rules.test.yml")
DASHBOARD = os.path.join(REPO, "etc", "prometheus", "mtce-dashboard.json")


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def need_prometheus():
    need(shutil.which("prometheus") is not None and shutil.which("promtool") is not None,
         "Debian's prometheus package is not installed (make test installs it)")


@pytest.fixture
def scraped(tmp_path, daemons):
    need_prometheus()
    c = Cluster(tmp_path / "cluster", workers=1)
    n = c.net
    agent_at, client_at, prom_at = f"{n}1:9470", f"{n}10:9471", f"{n}2:9472"
    c.controller.values["metrics"] = {"listen": agent_at}
    c.controller.write_ini()
    w = c.host("worker-0")
    w.values["metrics"] = {"client_listen": client_at}
    w.write_ini()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        f"global:\n  scrape_interval: {SCRAPE_S:g}s\n  scrape_timeout: {SCRAPE_S:g}s\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        f"  - job_name: mtce-agent\n    static_configs: [{{targets: ['{agent_at}']}}]\n"
        f"  - job_name: mtce-client\n    static_configs: [{{targets: ['{client_at}']}}]\n")
    agent = daemons("agent", c.agent_ini, name="agent")
    agent.wait_log("metrics: serving", timeout=15)
    agent.wait_log("Listening On: 'mtc client receive' socket", count=3)
    clients = {name: daemons("client", h.ini, name=name) for name, h in c.hosts.items()}
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen(["prometheus", f"--config.file={cfg}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address={prom_at}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: _ready(prom_at), 60, what="prometheus ready")
        yield c, agent, clients, prom_at, agent_at, client_at
    finally:
        prom.terminate()
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(5)
        log.close()


def _ready(at: str) -> bool:
    try:
        return get(f"http://{at}/-/ready", 2).strip().lower().startswith(b"prometheus")
    except OSError:
        return False


def query(at: str, expr: str) -> list:
    url = f"http://{at}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    reply = json.loads(get(url))
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def value(at: str, expr: str):
    result = query(at, expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_agent_and_the_client_and_sees_a_host_go_offline(scraped):
    c, agent, clients, prom, agent_at, client_at = scraped
    wait_until(lambda: (value(prom, 'count_over_time(up{job="mtce-agent"}[1m])') or 0) >= 2,
               30, what="two scrapes of the agent")
    wait_until(lambda: value(prom, 'mtce_host_network_up{host="worker-0",network="pxeboot"}')
               == 1, 30, what="worker-0 pxeboot ok in prometheus")
    wait_until(lambda: value(prom, 'min(up)') == 1, 30, what="both targets up")
    assert value(prom, 'mtce_host_available{host="worker-0"}') == 1
    assert value(prom, 'mtce_host_network_up{host="worker-0",network="mgmt"}') == 1
    assert value(prom, 'mtce_host_network_last_sequence{host="worker-0",network="mgmt"}') >= 1
    assert value(prom, 'mtce_client_mtcalive_sent_total{network="mgmt"}') >= 1
    assert value(prom, 'mtce_client_address_learned{address="own pxeboot"}') == 1
    assert value(prom, 'mtce_build_info{daemon="agent"}') == 1
    assert value(prom, 'sum(mtce_agent_datagrams_received_total)') >= 1

    text = get(f"http://{agent_at}/metrics").decode()
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    clients["worker-0"].stop()                        # worker-0 goes silent, then offline
    agent.wait_log("worker-0 going offline", timeout=30)
    said = time.monotonic()
    wait_until(lambda: value(prom, 'mtce_host_available{host="worker-0"}') == 0,
               2 * SCRAPE_S + 1.0, interval=0.1,
               what="availability 0 within two scrape intervals")
    assert time.monotonic() - said <= 2 * SCRAPE_S + 1.0
    assert value(prom, 'mtce_host_available{host="controller-0"}') == 1


def test_the_alert_rules_pass_promtool_and_their_own_tests():
    need_prometheus()
    for argv in (["promtool", "check", "rules", RULES],
                 ["promtool", "test", "rules", RULE_TESTS]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                              cwd=os.path.dirname(RULES))
        assert proc.returncode == 0, (argv, proc.stdout + proc.stderr)


def exported_names() -> set[str]:
    """Every series name the daemons' code can export (from metrics.py itself)."""
    src = open(os.path.join(REPO, "mtce", "metrics.py"), encoding="utf-8").read()
    return set(re.findall(r'"(mtce_[a-z0-9_]+)"', src)) | \
        set(re.findall(r"f\"(mtce_[a-z0-9_]+)\{", src))


def test_the_dashboard_is_json_and_asks_only_for_series_the_endpoint_exports():
    with open(DASHBOARD, encoding="utf-8") as f:
        board = json.load(f)
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "expr" and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(board)
    assert len(exprs) >= 5
    names = exported_names() | {"up"}
    for expr in exprs:
        for used in re.findall(r"\b(mtce_[a-z0-9_]+|up)\b", expr):
            assert used in names, (used, expr)
    with open(RULES, encoding="utf-8") as f:
        for used in re.findall(r"\b(mtce_[a-z0-9_]+)\b", f.read()):
            assert used in names, used
