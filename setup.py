"""Debian packaging of mtce, built with stdeb (`make deb`; see mk/package.mk).

The package carries no Python modules: everything the program needs is inside the zipapp
`dist/mtce.pyz` (`make pyz`), installed as /usr/bin/mtce. This file only describes the package
(name, version, maintainer, description) and lists the files it installs; stdeb turns it into
a Debian source package and dpkg-buildpackage into `mtce_<version>_all.deb`.

Run it only through `make deb`, with Debian's /usr/bin/python3 (docs/design.md "stdeb, with
Debian's python": stdeb needs the system setuptools; a venv's python rejects
--install-layout).
"""

import os
import re

from setuptools import setup
from setuptools.command.install_egg_info import install_egg_info

try:  # setuptools >= 69
    from setuptools.command.install_data import install_data
except ImportError:  # Debian 12's setuptools 66
    from distutils.command.install_data import install_data

HERE = os.path.dirname(os.path.abspath(__file__))
PYZ = "dist/mtce.pyz"


def version():
    """`__version__` of mtce/__init__.py, read as text (never import the package here)."""
    with open(os.path.join(HERE, "mtce", "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', f.read(), re.M)
    if not m:
        raise SystemExit("setup.py: no __version__ in mtce/__init__.py")
    return m.group(1)


class InstallData(install_data):
    """install_data that installs the zipapp under its command name, /usr/bin/mtce."""

    def run(self):
        super().run()
        for i, path in enumerate(self.outfiles):
            if os.path.basename(path) == "mtce.pyz":
                target = os.path.join(os.path.dirname(path), "mtce")
                os.replace(path, target)
                os.chmod(target, 0o755)
                self.outfiles[i] = target


class NoEggInfo(install_egg_info):
    """No egg-info: the package ships no Python distribution, only a zipapp."""

    def run(self):
        self.outputs = []

    def get_outputs(self):
        return []


if not os.path.exists(os.path.join(HERE, PYZ)):
    # sdist/bdist without the zipapp would give a package without its program.
    raise SystemExit(f"setup.py: {PYZ} is missing; run 'make pyz' first (or 'make deb')")

LONG_DESCRIPTION = """\
mtce re-implements the mtcAlive messaging of StarlingX maintenance: mtcClient,
the per-host daemon that sends mtcAlive messages and answers commands on the
management, cluster-host and pxeboot networks, and mtcAgent, the controller
daemon that tracks every host's availability per network and raises alarms. It
is wire-compatible with the C daemons.

The program is one self-contained Python zipapp, /usr/bin/mtce, with its
dependencies (pyroute2, configobj, python-daemon, lockfile) inside; it needs
only python3. Units mtcagent.service and mtcclient.service (and the init
scripts mtcAgent and mtcClient) are installed but not enabled: configure
/etc/mtc.ini and /etc/mtce/inventory.ini first.
"""

setup(
    name="mtce",
    version=version(),
    # stdeb cuts the synopsis at 60 characters.
    description="StarlingX maintenance mtcAlive daemons (mtcAgent, mtcClient)",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/plain",
    author="mtce developers",
    author_email="mtce-dev@example.org",
    maintainer="mtce developers",
    maintainer_email="mtce-dev@example.org",
    license="Apache-2.0",
    # stdeb writes "Homepage: <url>" unless the url is distutils' old 'UNKNOWN'.
    url="UNKNOWN",
    platforms=["Linux"],
    python_requires=">=3.9",
    # Nothing to import: the zipapp below is the whole program.
    py_modules=[],
    packages=[],
    data_files=[
        ("/usr/bin", [PYZ]),
        ("/etc", ["etc/mtc.ini"]),
        ("/etc/mtce", ["debian/inventory.ini"]),
        ("/etc/init.d", ["debian/init.d/mtcAgent", "debian/init.d/mtcClient"]),
        ("/lib/systemd/system", ["debian/mtcagent.service", "debian/mtcclient.service"]),
        # Prometheus alert rules (with their promtool tests) and a Grafana dashboard
        ("/usr/share/doc/mtce/examples", ["etc/prometheus/mtce-rules.yml",
                                          "etc/prometheus/mtce-rules.test.yml",
                                          "etc/prometheus/mtce-dashboard.json",
                                          "etc/pacemaker/mtce-cib.xml"]),
        # the Pacemaker resource agent ocf:mtce:mtcAgent (docs/ha.md)
        ("/usr/lib/ocf/resource.d/mtce", ["debian/ocf/mtcAgent"]),
    ],
    cmdclass={"install_data": InstallData, "install_egg_info": NoEggInfo},
    zip_safe=False,
)
