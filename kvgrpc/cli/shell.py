"""``python -m kvgrpc.client shell``: an interactive shell (the original client read
commands from the terminal): put, get, del, scan, watch, status."""

from __future__ import annotations

import cmd
import contextlib
import io
import os
import shlex
import sys

from kvgrpc.cli.output import escape_bytes, escape_text, event_line
from kvgrpc.client import KeyValueClient
from kvgrpc.errors import KvError
from kvgrpc.records import EndpointStatus


def status_line(e: EndpointStatus) -> str:
    """One database endpoint as a line of text (the shell's and ``status``'s format)."""
    lag = "-" if e.lag_ms is None else f"{e.lag_ms} ms"
    state = "healthy" if e.healthy else f"NOT healthy ({e.problem})"
    return f"{e.role:<8} {state}, lag {lag}, pool {e.pool_in_use}/{e.pool_size}: {e.name}"

class Shell(cmd.Cmd):
    """``python -m kvgrpc.client shell``: put/get/del/scan/status at a prompt.

    Line editing and history come from readline (history kept in ~/.kvgrpc_history when
    the shell runs on a terminal). Arguments are split like a POSIX shell, so quote keys
    or values with spaces. A command's error (the server's, a bad argument, a key that is
    not UTF-8) is printed as one ``error: ...`` line and the shell goes on; ``failed`` is
    then set. Values are stored as their bytes came, like ``put KEY VALUE`` on the
    command line.
    """

    intro: str | None = ("kvgrpc shell: put KEY VALUE | get KEY | del KEY | scan [PREFIX] [LIMIT] | "
             "watch KEY | watch --prefix [PREFIX] | status | quit")

    def __init__(self, client: KeyValueClient, out) -> None:
        super().__init__(stdout=out)
        self.client = client
        self.prompt = f"kvgrpc {client.target}> "
        self.failed = False  # a command failed (an error line was printed)

    def _args(self, line: str, count: range) -> list[str] | None:
        try:
            args = shlex.split(line)
        except ValueError as exc:
            self._error(str(exc))
            return None
        if len(args) not in count:
            self._error(f"expected {count.start}{'' if len(count) == 1 else f' to {count.stop - 1}'} "
                        "argument(s); try 'help'")
            return None
        return args

    def _say(self, text: str) -> None:
        print(text, file=self.stdout)

    def _error(self, text: str) -> None:
        self.failed = True
        self._say(f"error: {text}")

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except (KvError, ValueError, TypeError, UnicodeError) as exc:
            self._error(str(exc))
        except OSError as exc:
            self._error(exc.strerror or str(exc))
        return False

    def get_names(self) -> list[str]:
        # `help` lists these; EOF is Ctrl-D (or the end of piped input), not a command.
        return [name for name in super().get_names() if name != "do_EOF"]

    def emptyline(self) -> bool:
        return False

    def default(self, line: str) -> None:
        self._error(f"unknown command {line.split()[0]!r}; try 'help'")

    def do_put(self, line: str) -> None:
        """put KEY VALUE: store VALUE (text) under KEY."""
        if args := self._args(line, range(2, 3)):
            # Bytes of the input that are not UTF-8 (surrogate escapes) are stored as they came.
            value = args[1].encode("utf-8", "surrogateescape")
            self._say(f"ok (version {self.client.put(args[0], value)})")

    def do_get(self, line: str) -> None:
        """get KEY: print the value under KEY."""
        if args := self._args(line, range(1, 2)):
            self._say(escape_bytes(self.client.get(args[0])))

    def do_del(self, line: str) -> None:
        """del KEY: remove KEY."""
        if args := self._args(line, range(1, 2)):
            self._say("deleted" if self.client.delete(args[0]) else "not found (nothing deleted)")

    def do_scan(self, line: str) -> None:
        """scan [PREFIX] [LIMIT]: list keys and values in key order (default: 20 of them)."""
        args = self._args(line, range(0, 3))
        if args is None:
            return
        prefix = args[0] if args else ""
        try:
            limit = int(args[1]) if len(args) > 1 else 20
        except ValueError:
            limit = 0
        if limit < 1:
            self._error(f"LIMIT must be a whole number of at least 1, not {args[1]!r}")
            return
        shown = 0
        for record in self.client.scan(prefix, page_size=max(1, min(limit, 1000))):
            if shown == limit:
                self._say("... (more)")
                break
            self._say(f"{escape_text(record.key)} = {escape_bytes(record.value)}")
            shown += 1
        if shown == 0:
            self._say("(no keys)")

    def do_watch(self, line: str) -> None:
        """watch KEY | watch --prefix [PREFIX]: print changes as they happen, until Ctrl-C."""
        args = self._args(line, range(1, 3))
        if args is None:
            return
        key: str | None = None
        prefix: str | None = None
        if args[0] == "--prefix":
            prefix = args[1] if len(args) > 1 else ""
        elif len(args) == 1:
            key = args[0]
        else:
            self._error("watch KEY, or watch --prefix [PREFIX]")
            return
        self._say("watching; Ctrl-C to stop")
        with self.client.watch(key, prefix=prefix) as watch:
            try:
                for event in watch:
                    self._say(event_line(event, "text"))
            except KeyboardInterrupt:
                self._say(f"stopped at revision {watch.revision}")

    def do_status(self, line: str) -> None:
        """status: the server's database endpoints."""
        for endpoint in self.client.status():
            self._say(status_line(endpoint))

    def do_quit(self, line: str) -> bool:
        """quit: leave the shell (also: exit, Ctrl-D)."""
        return True

    do_exit = do_quit

    def do_EOF(self, line: str) -> bool:
        """EOF (Ctrl-D): leave the shell."""
        self._say("")
        return True


def run_shell(client: KeyValueClient, out) -> int:
    """Runs the shell on stdin until quit or end of input; returns the exit status: 0, or
    1 when stdin is not a terminal (a script) and a command failed."""
    history = os.path.expanduser("~/.kvgrpc_history")
    piped = not sys.stdin.isatty()
    interactive = not piped
    if isinstance(sys.stdin, io.TextIOWrapper):
        # A byte that is not UTF-8 must not end the shell: it becomes a surrogate escape,
        # which a value keeps as that byte and a key refuses (one error line).
        sys.stdin.reconfigure(errors="surrogateescape")
    if interactive:
        try:
            import readline

            with contextlib.suppress(OSError):
                readline.read_history_file(history)
        except ImportError:
            interactive = False
    shell = Shell(client, out)
    if not interactive:
        shell.prompt = ""
        shell.intro = None
    try:
        shell.cmdloop()
    except KeyboardInterrupt:
        print("", file=out)
    finally:
        if interactive:
            with contextlib.suppress(OSError):
                readline.write_history_file(history)
    return 1 if piped and shell.failed else 0

