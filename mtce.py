#!/usr/bin/env python3
"""mtce: StarlingX maintenance mtcAlive messaging (mtcAgent/mtcClient) in Python.

Also the zipapp's __main__. Kept free of newer syntax so that an old python3 can print
which version it needs instead of a SyntaxError.
"""
import sys

REQUIRED = (3, 9)

if sys.version_info < REQUIRED:
    sys.stderr.write("mtce: needs Python %d.%d or newer; this is %s\n"
                     % (REQUIRED + (sys.version.split()[0],)))
    sys.exit(2)

if __name__ == "__main__":
    try:
        from mtce.cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(main())
