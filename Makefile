# mtce: every target installs what it needs first (apt and pip), on a fresh Debian 12.
#   make lab    the demo: an agent and clients on this machine, live table
#   make test   the whole test suite (root for the network-namespace tests)
#   make test-fast  the in-process tests alone, for the edit-run loop (under a minute)
#   make soak   the long fuzz soak (1,000,000 datagrams per daemon); make bench: the benchmark

PYTHON  ?= python3
VENV    ?= .venv
VPY      = $(VENV)/bin/python
PYTEST_ARGS ?=
# The suite runs in TEST_JOBS processes, a test file each at a time (pytest-xdist, loadfile):
# most of its time is spent waiting on real sockets and timers, so two halve the wall time.
# Its temporary files go under TEST_TMP, a short path: Unix socket paths have 107 bytes.
TEST_JOBS ?= 2
TEST_TMP  ?= /tmp/mtce-tests
APT_GET  = DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0

.PHONY: all lab test test-fast bench venv sysdeps clean

include mk/package.mk
include mk/soak.mk

all: test

# System packages each target needs, as package:command pairs. A command is looked up in PATH
# and in /usr/local/sbin, /usr/sbin and /sbin, where Debian installs many of them and where a
# normal user's PATH does not look. The test suite: iproute2 (ip netns, veth), procps,
# prometheus (the metrics test runs the real server and promtool), resource-agents
# (ocf-tester) and pacemaker-cli-utils (crm_simulate) for the HA tests, corosync, pacemaker
# and kmod (the Filesystem resource agent wants modprobe) for `mtce lab --ha`. The loopback
# demo and the benchmark need nothing beyond the venv (python3-venv, always checked).
LAB_DEPS  =
TEST_DEPS = iproute2:ip procps:pkill prometheus:promtool resource-agents:ocf-tester \
            pacemaker-cli-utils:crm_simulate libxml2-utils:xmllint corosync:corosync \
            pacemaker:pacemakerd kmod:modprobe
SYSDEPS   = $(TEST_DEPS)
# Inherited by the prerequisites ($(VPY), sysdeps) when these targets are made.
lab bench: SYSDEPS = $(LAB_DEPS)

# Missing packages are installed as root; a normal user is told which. Services the packages
# bring are not started: a policy-rc.d that says so is in place while apt runs, if there is
# none already.
sysdeps:
	@missing=""; PATH="$$PATH:/usr/local/sbin:/usr/sbin:/sbin"; \
	for dep in $(SYSDEPS); do \
	  command -v "$${dep#*:}" >/dev/null 2>&1 || missing="$$missing $${dep%%:*}"; \
	done; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: needs$$missing (run as root to install)"; exit 1; fi; \
	  made=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made=1; \
	  fi; \
	  $(APT_GET) update && $(APT_GET) install --no-install-recommends $$missing; rc=$$?; \
	  [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; \
	  exit $$rc; \
	fi

# The venv is made once its stamp is older than the requirements. The stamp, not the
# interpreter: .venv/bin/python is a symlink to the system's python, which `touch` would
# change as root and cannot as a normal user.
VSTAMP   = $(VENV)/.installed

$(VSTAMP): requirements.txt requirements-dev.txt | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(VSTAMP)

$(VPY): $(VSTAMP) ;

venv: $(VPY)

lab: $(VPY)
	$(VPY) mtce.py lab

test: $(VPY)
	$(VPY) -m pytest -n $(TEST_JOBS) --dist loadfile --basetemp=$(TEST_TMP) $(PYTEST_ARGS)

# The edit-run loop: the in-process tests alone (pure cores, the fake clock and network, the
# docs and the module map), under a minute and no root; `make test` stays the whole suite.
FAST_MARKERS = not loopback and not netns and not slow and not soak and not systemd and \
               not prometheus and not ha
test-fast: $(VPY)
	$(VPY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --basetemp=$(TEST_TMP) \
	  -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

bench: $(VPY)
	$(VPY) mtce.py bench

clean:
	rm -rf $(VENV) build dist deb_dist .pytest_cache *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
