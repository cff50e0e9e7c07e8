# Soak fuzzing (issue 8; included by the top Makefile).
#   make soak   1,000,000 random and mutated datagrams to a running mtcAgent, then 1,000,000
#               to a running mtcClient, on 127.x (tests/harness/soak.py, tests/test_soak.py), at
#               25,000/s: about 1.5 minutes on 2 cores. Prints one `fuzz:` line per daemon.
#               SOAK_COUNT, SOAK_RATE and SOAK_SEED (environment) change the run.
# Bounded: the soak gives up at twice its planned time, and SOAK_TIMEOUT (seconds) stops
# pytest with SIGINT, so that its fixtures still stop the daemons (SIGKILL 30 s later).
# Uses VPY from the Makefile.

SOAK_TIMEOUT ?= 300

.PHONY: soak

soak: $(VPY)
	timeout --foreground -s INT -k 30 $(SOAK_TIMEOUT) \
	  $(VPY) -m pytest -m soak -s -p no:cacheprovider tests/test_soak.py
