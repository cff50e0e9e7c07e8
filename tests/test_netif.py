"""mtce/netif.py: the interface MAC and addresses, dnsmasq.hosts, the hosts file and resolve,
platform.conf."""

from __future__ import annotations

import socket

import pytest

from mtce import netif
from mtce.netlink import NetlinkLinks
from harness.sysnet import NICS, build_netlink, write


# --------------------------------------------------------------------------------------------
# iface_mac


def test_iface_mac(tmp_path):
    _, links = build_netlink(tmp_path / "nl", dict(NICS))
    assert netif.iface_mac("enp0s8", links, str(tmp_path / "nl")) == "08:00:27:aa:00:02"
    sys_dir = tmp_path / "sys"
    (sys_dir / "eth1").mkdir(parents=True)
    (sys_dir / "eth1" / "address").write_text("08:00:27:AB:CD:EF\n")
    (sys_dir / "eth2").mkdir()
    (sys_dir / "eth2" / "address").write_bytes(b"\xff\xfe garbage\n")
    assert netif.iface_mac("eth1", NetlinkLinks([]), str(sys_dir)) == "08:00:27:ab:cd:ef"
    assert netif.iface_mac("eth1", None, str(sys_dir)) == "08:00:27:ab:cd:ef"
    assert netif.iface_mac("eth2", None, str(sys_dir)) == ""
    assert netif.iface_mac("eth9", None, str(sys_dir)) == ""


# --------------------------------------------------------------------------------------------
# dnsmasq.hosts (docs/protocol.md §5.2)


DNSMASQ = (
    "pxecontroller,169.254.202.1\n"
    "08:00:27:AA:BB:01,pxeboot-1,169.254.202.2,1d\n"
    "08:00:27:aa:bb:02,pxeboot-2,169.254.202.3,1d\n"
    "# a comment\n"
    "\n"
    "08:00:27:aa:bb:03,pxeboot-3,169.254.202.50,1d\r\n"
    "08:00:27:aa:bb:04,pxeboot-4\n"
    "zz:00:27:aa:bb:05,pxeboot-5,169.254.202.51,1d\n"
    "08:00:27:aa:bb:06,pxeboot-6,169.254.202.300,1d\n"
    "08:00:27:aa:bb:07,pxeboot-7,\n"
    "08:00:27:aa:bb:08,pxeboot-8,[fd00::8],1d\n"
)


def test_parse_dnsmasq_hosts():
    entries, problems = netif.parse_dnsmasq_hosts(DNSMASQ)
    assert entries == [
        netif.DnsmasqEntry("08:00:27:aa:bb:01", "pxeboot-1", "169.254.202.2", 2),
        netif.DnsmasqEntry("08:00:27:aa:bb:02", "pxeboot-2", "169.254.202.3", 3),
        netif.DnsmasqEntry("08:00:27:aa:bb:03", "pxeboot-3", "169.254.202.50", 6),
        netif.DnsmasqEntry("08:00:27:aa:bb:07", "pxeboot-7", "", 10),
    ]
    assert [n for n, _ in problems] == [7, 8, 9, 11]
    assert "fewer than 3 fields" in problems[0][1]
    assert "bad MAC address" in problems[1][1]
    assert "bad IPv4 address" in problems[2][1] and "bad IPv4" in problems[3][1]


def test_parse_dnsmasq_hosts_garbage_never_raises():
    entries, problems = netif.parse_dnsmasq_hosts("\x00\ufffd,,,\n,,\n" + "a" * 10000)
    assert entries == [] and len(problems) == 3


def test_read_dnsmasq_hosts(tmp_path):
    path = tmp_path / "dnsmasq.hosts"
    assert netif.read_dnsmasq_hosts(str(path)) == ([], [], f"{path} file not present")
    path.mkdir()
    assert netif.read_dnsmasq_hosts(str(path))[2] == (
        f"failed to open seemingly present {path} file")
    path.rmdir()
    write(path, DNSMASQ.encode() + b"08:00:27:aa:bb:09,pxeboot-\xff,169.254.202.9\n")
    entries, problems, error = netif.read_dnsmasq_hosts(str(path))
    assert error is None and len(entries) == 5 and len(problems) == 4
    assert entries[-1].mac == "08:00:27:aa:bb:09" and entries[-1].lineno == 12


# --------------------------------------------------------------------------------------------
# hosts file and resolve


HOSTS = """# comment line
127.0.0.1   localhost
::1         localhost ip6-localhost   # trailing comment
192.168.204.2  controller  Controller-Floating
fd00:204::2    controller
192.168.204.3  controller-0
not-an-ip      bogus
192.168.206.3  controller-0-cluster-host
"""


def test_parse_hosts_file():
    table = netif.parse_hosts_file(HOSTS)
    assert table["localhost"] == ["127.0.0.1", "::1"]
    assert table["ip6-localhost"] == ["::1"]
    assert table["controller"] == ["192.168.204.2", "fd00:204::2"]
    assert table["controller-floating"] == ["192.168.204.2"]
    assert "bogus" not in table and "comment" not in table


def test_resolve_hosts_file_ipv6_first(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise AssertionError("getaddrinfo must not be asked")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    hosts = write(tmp_path / "hosts", HOSTS)
    assert netif.resolve("controller", str(hosts)) == [
        (socket.AF_INET6, "fd00:204::2"), (socket.AF_INET, "192.168.204.2")]
    assert netif.resolve("CONTROLLER-0", str(hosts)) == [(socket.AF_INET, "192.168.204.3")]


def test_resolve_falls_back_to_getaddrinfo(tmp_path, monkeypatch):
    calls = []

    def fake(name, port, family=0, type=0, *rest):
        calls.append((name, family, type))
        if name == "worker-9":
            return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.0.0.9", 0)),
                    (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("fd00::9", 0, 0, 0)),
                    (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.0.0.9", 0))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    hosts = write(tmp_path / "hosts", HOSTS)
    assert netif.resolve("worker-9", str(hosts)) == [
        (socket.AF_INET6, "fd00::9"), (socket.AF_INET, "10.0.0.9")]
    assert calls == [("worker-9", socket.AF_UNSPEC, socket.SOCK_DGRAM)]
    assert netif.resolve("nowhere", str(hosts)) == []
    assert netif.resolve("nowhere", str(tmp_path / "missing")) == []
    assert netif.resolve("", str(hosts)) == []


def test_resolve_unencodable_name():
    assert netif.resolve("a" * 300 + ".\udcff", None) == []


# --------------------------------------------------------------------------------------------
# platform.conf


PLATFORM = """# platform.conf
nodetype=controller
subfunction = controller,worker
system_type="All-in-one"
system_mode=duplex
management_interface=vlan123
system_mode=duplex-direct
sw_version='24.09'
broken line
"""


def test_parse_platform_conf():
    conf = netif.parse_platform_conf(PLATFORM)
    assert conf == {"nodetype": "controller", "subfunction": "controller,worker",
                    "system_type": "All-in-one", "system_mode": "duplex-direct",
                    "management_interface": "vlan123", "sw_version": "24.09"}


@pytest.mark.parametrize("conf, mode", [
    ({"system_type": "Standard", "system_mode": "simplex"}, "standard"),
    ({"system_type": "All-in-one", "system_mode": "duplex"}, "duplex"),
    ({"system_type": "All-in-one", "system_mode": "Duplex-Direct"}, "duplex-direct"),
    ({"system_type": "All-in-one", "system_mode": "simplex"}, "simplex"),
    ({"system_type": "All-in-one", "system_mode": "weird"}, "simplex"),
    ({"system_type": "All-in-one"}, "simplex"),
    ({}, "simplex"),
])
def test_system_mode(conf, mode):
    assert netif.system_mode(conf) == mode


def test_iface_addresses_prefer_the_interface_own_address_and_skip_link_local():
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    link = ifinfmsg()
    link["index"] = 2
    link["attrs"] = [("IFLA_IFNAME", "eth0")]

    def addr(family, address, label=None):
        m = ifaddrmsg()
        m["index"], m["family"] = 2, family
        m["attrs"] = [("IFA_ADDRESS", address)] + ([("IFA_LABEL", label)] if label else [])
        return m

    links = NetlinkLinks([link, addr(socket.AF_INET, "10.0.2.30", "eth0:2"),
                          addr(socket.AF_INET, "10.0.0.10", "eth0"),
                          addr(socket.AF_INET6, "fe80::1"), addr(socket.AF_INET6, "fd00::10")])
    assert netif.iface_addresses("eth0", links, socket.AF_INET) == ["10.0.0.10", "10.0.2.30"]
    assert netif.iface_addresses("eth0", links, socket.AF_INET6) == ["fd00::10"]
