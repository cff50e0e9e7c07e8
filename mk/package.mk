# Packaging: the zipapp and the Debian package (included by the top Makefile).
#   make pyz          dist/mtce.pyz, the reproducible single-file zipapp (tools/build_pyz.py)
#   make deb          dist/mtce_<version>_all.deb with stdeb, then lintian (lint-deb)
#   make lint-deb     lintian on the .deb: fails on any error or warning (overrides, each
#                     with its reason: debian/mtce.lintian-overrides)
#   make test-chroot  packaging tests on the host, then install/remove/upgrade and the test
#                     suite in a fresh Debian 12 chroot (tools/chroot_test.sh; root)
#   make test-systemd the .deb in a booted Debian 12 container with systemd as PID 1
#                     (systemd-nspawn; tests/test_systemd.py, tests/harness/container.py; root)
# Uses VENV (and the Makefile's rule that makes $(VENV)/bin/python) and APT_GET; the
# defaults below are the Makefile's, so the include may come before or after them.
# stdeb runs with Debian's /usr/bin/python3 and system setuptools, never a venv or pyenv
# python (docs/design.md "stdeb, with Debian's python").

# Keep the Makefile's default goal wherever this file is included (an empty .DEFAULT_GOAL
# at the end lets make take the next target it reads).
_PKG_GOAL   := $(.DEFAULT_GOAL)
VENV        ?= .venv
APT_GET     ?= DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0
PKG_PY      = $(VENV)/bin/python
SYS_PY      = /usr/bin/python3
MTCE_VERSION := $(shell sed -n 's/^__version__ *= *.\([^"'"'"']*\).*/\1/p' mtce/__init__.py)
DEB_VERSION  = $(MTCE_VERSION)-1
PYZ          = dist/mtce.pyz
# The file is named with the upstream version (interface: dist/mtce_<version>_all.deb);
# the package inside carries the Debian revision, $(DEB_VERSION).
DEB          = dist/mtce_$(MTCE_VERSION)_all.deb
DEB_TOOLS    = python3-stdeb dh-python python3-all debhelper fakeroot lintian
CHROOT_TOOLS = debootstrap
SYSTEMD_TOOLS = debootstrap systemd-container
# A clean environment for the Debian tools: no venv, no pyenv shims ahead of /usr/bin.
DEB_ENV      = env -u VIRTUAL_ENV -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP \
               PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8

.PHONY: pyz deb lint-deb test-chroot test-systemd deb-tools chroot-tools systemd-tools

pyz: $(PYZ)

$(PYZ): $(wildcard mtce/*.py) mtce.py requirements.txt tools/build_pyz.py | $(PKG_PY)
	$(PKG_PY) tools/build_pyz.py -o $@

# apt packages, installed only when missing (apt-get update first, as on a fresh machine).
define apt_ensure
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || \
	    missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: needs$$missing (run as root to install)"; exit 1; fi; \
	  echo "make: installing$$missing"; \
	  $(APT_GET) update >/dev/null && \
	    $(APT_GET) install --no-install-recommends $$missing >/dev/null; \
	fi
endef

deb-tools:
	$(call apt_ensure,$(DEB_TOOLS))

chroot-tools:
	$(call apt_ensure,$(CHROOT_TOOLS))

systemd-tools:
	$(call apt_ensure,$(SYSTEMD_TOOLS))

deb: $(DEB) lint-deb

# stdeb: setup.py -> sdist (with dist/mtce.pyz inside) -> deb_dist/mtce-<v>/ with a debian/
# made of ours (debian/*) plus its control, rules, changelog, compat -> dpkg-buildpackage.
$(DEB): $(PYZ) setup.py stdeb.cfg MANIFEST.in etc/mtc.ini $(wildcard debian/* debian/init.d/*) \
		| deb-tools
	rm -rf deb_dist build/stdeb
	@mkdir -p build/stdeb
	@echo "stdeb: building $@ (log: build/deb.log)"
	@# The sdist is made first, with the egg-info under build/: stdeb would otherwise leave
	@# mtce.egg-info and a copy of the tarball in the top directory.
	@if ! { $(DEB_ENV) $(SYS_PY) setup.py egg_info --egg-base build/stdeb \
	        sdist --dist-dir build/stdeb && \
	      $(DEB_ENV) $(SYS_PY) setup.py --command-packages=stdeb.command \
	        egg_info --egg-base build/stdeb \
	        sdist_dsc --use-premade-distfile build/stdeb/mtce-$(MTCE_VERSION).tar.gz \
	          --compat 13 --dist-dir deb_dist \
	        bdist_deb; } >build/deb.log 2>&1; then \
	  tail -n 40 build/deb.log; echo "make: stdeb failed (full log: build/deb.log)"; exit 1; fi
	cp deb_dist/mtce_$(DEB_VERSION)_all.deb $@
	@echo "built $@"

lint-deb: $(DEB) | deb-tools
	$(DEB_ENV) lintian --fail-on error,warning --display-info $(DEB)

test-chroot: $(DEB) | $(PKG_PY) chroot-tools
	MTCE_DEB=$(abspath $(DEB)) $(PKG_PY) -m pytest -q -p no:cacheprovider tests/test_packaging.py
	tools/chroot_test.sh $(DEB)

# The container's root is cached in build/systemd (MTCE_SYSTEMD_DIR) while its recipe holds.
test-systemd: $(DEB) | $(PKG_PY) systemd-tools
	MTCE_DEB=$(abspath $(DEB)) $(PKG_PY) -m pytest -v -p no:cacheprovider -m systemd \
	  tests/test_systemd.py

.DEFAULT_GOAL := $(_PKG_GOAL)
