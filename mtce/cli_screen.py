"""What the command line and the labs write to a terminal or a pipe: `Output` (line output that
stops at a reader gone: `mtce hosts --watch | head`, `mtce lab | head`), `Screen` (a live block
redrawn in place), and `Interrupted`, the stop every one of them ends with (a signal, SIGPIPE).
"""

from __future__ import annotations

import re
import shutil
import signal

from mtce.cli import OutputError


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: stop now, clean up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_COLOURS = [(re.compile(r"(?<![\w-])(lost|offline|FAILED)(?![\w-])"), "\x1b[31m"),
            (re.compile(r"(?<![\w-])(locked)(?![\w-])"), "\x1b[33m"),
            (re.compile(r"(?<![\w-])(ok|online)(?![\w-])"), "\x1b[32m")]


def _colour(line: str) -> str:
    for pattern, code in _COLOURS:
        line = pattern.sub(lambda m, code=code: f"{code}{m.group(1)}\x1b[0m", line)
    return line


class Output:
    """The labs' line output. `mtce lab | head`: the first write to a pipe whose reader is gone
    stops the lab as Ctrl-C does (Interrupted, SIGPIPE); every later line is dropped."""

    def __init__(self, out):
        self.out = out
        self.broken = False

    def say(self, text: str = "") -> None:
        if self.broken:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.broken = True
            raise Interrupted(signal.SIGPIPE) from None
        except OSError as err:          # a full disk: the lab stops, `mtce` says so (exit 1)
            self.broken = True
            raise OutputError(f"cannot write the output: {err.strerror or err}") from None


class Screen:
    """The live block on a terminal: redrawn in place (cursor up, rewrite each line, clear to
    its end) in one write, so nothing flickers; lines fit the terminal's width and height."""

    def __init__(self, out):
        self.out = out
        self.drawn = 0

    def draw(self, lines: list[str]) -> None:
        size = shutil.get_terminal_size((120, 40))
        lines = lines[:max(3, size.lines - 1)]
        buf = [f"\x1b[{self.drawn}A\r" if self.drawn else "\r"]
        width = max(10, size.columns - 1)
        for line in lines:        # a line cut to the width says so with its last character
            line = line if len(line) <= width else line[:width - 1] + ">"
            buf.append(_colour(line) + "\x1b[K\n")
        buf.append("\x1b[J")
        self.out.write("".join(buf))
        self.out.flush()
        self.drawn = len(lines)

    def hide_cursor(self) -> None:
        self.out.write("\x1b[?25l")
        self.out.flush()

    def restore(self) -> None:
        self.out.write("\x1b[0m\x1b[?25h")
        self.out.flush()
