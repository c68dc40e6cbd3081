"""A quiet terminal: recsys_exp's own lines on the terminal, everything else in the run's log file.

Inside :func:`quiet_terminal` the process's stdout and stderr file descriptors point to the log file
(``<run dir>/recsys_exp.log``, the file Hydra's job logging writes), so whatever writes to them
directly lands there: the C++ log lines of Ray's core worker, the processes Ray starts, and the
output of Ray workers that the driver relays (``log_to_driver``). ``sys.stdout`` and ``sys.stderr``
become routers that look at the module making each write: writes from recsys_exp's own code go to
the terminal (and into the log), all others (Tune's boxes and hints, Ray's and RLlib's loggers,
Python warnings, W&B) only into the log. Hydra's console log handlers are detached for the block;
its file handler keeps writing the same file. Everything is put back when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Iterator, TextIO

OWN_PACKAGE = "recsys_exp"
# Modules that wrap print() or a stream's write() and call the original: the writer is further up
# the stack (wandb patches sys.stdout.write/sys.stderr.write when it is first imported; Ray's
# log_to_driver replaces builtins.print with tqdm_ray.safe_print).
FORWARDERS = ("wandb.sdk.lib.console_capture", "ray.experimental.tqdm_ray")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_active: list[Path] = []  # the log files of the quiet blocks open now (innermost last)


def is_own_module(name: str) -> bool:
    """True for recsys_exp and its submodules (the code whose prints belong on the terminal)."""
    return name == OWN_PACKAGE or name.startswith(OWN_PACKAGE + ".")


def _caller_module() -> str:
    """The module of the code that called the router's write (wrappers of write() skipped)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in FORWARDERS:
        frame = frame.f_back
    return "" if frame is None else frame.f_globals.get("__name__", "")


class _Router:
    """A text stream that sends each write to the terminal and the log, or only to the log, by the
    module of the code that writes; after :meth:`detach`, everything goes to ``fallback``."""

    def __init__(self, terminal: TextIO, log: TextIO, fd: int, fallback: TextIO):
        self._terminal, self._log, self._fd, self._fallback = terminal, log, fd, fallback
        self._attached = True

    def write(self, text: str) -> int:
        return self._route(text, _caller_module())

    def writelines(self, lines) -> None:
        caller = _caller_module()
        for line in lines:
            self._route(line, caller)

    def _route(self, text: str, caller: str) -> int:
        if not self._attached:
            return self._fallback.write(text)
        if is_own_module(caller):
            self._terminal.write(text)
        self._log.write(_ANSI.sub("", text) if "\x1b" in text else text)  # Ray colours its workers' prefixes
        return len(text)

    def flush(self) -> None:
        if not self._attached:
            self._fallback.flush()
            return
        for stream in (self._terminal, self._log):
            with contextlib.suppress(ValueError, OSError):
                stream.flush()

    def fileno(self) -> int:
        """The redirected descriptor (the log file while attached)."""
        return self._fd if self._attached else self._fallback.fileno()

    def isatty(self) -> bool:
        return False if self._attached else self._fallback.isatty()

    def close(self) -> None:
        """Flush only: the streams behind belong to the quiet block (and after it to the process;
        absl's log handler, for one, closes the stream it was created with when logging is reset)."""
        self.flush()

    @property
    def closed(self) -> bool:
        return False

    def detach(self) -> None:
        """From now on, write to ``fallback`` (references kept by libraries stay usable)."""
        self.flush()
        self._attached = False

    def __getattr__(self, name: str):  # encoding, errors, buffer, ...: those of the stream behind
        return getattr(self._log if self._attached else self._fallback, name)


def active_log_file() -> Path | None:
    """The log file other libraries' output goes to now; None outside :func:`quiet_terminal`."""
    return _active[-1] if _active else None


def hydra_log_file() -> Path | None:
    """The file of the root logger's file handler (Hydra's ``<run dir>/<job name>.log``), if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextlib.contextmanager
def quiet_terminal(log_file: Path) -> Iterator[Path | None]:
    """Route all output but recsys_exp's own into ``log_file`` for the block (see the module doc).

    Yields the log file, or None if the standard descriptors cannot be duplicated (closed); the
    block then runs unchanged.
    """
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            stream.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:
        yield None
        return
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # Line-buffered: a progress line shows up when it is printed, and the log keeps the order.
    terminal_out = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
    terminal_err = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
    log = os.fdopen(os.dup(log_fd), "a", buffering=1, encoding="utf-8", errors="replace")
    old_out, old_err = sys.stdout, sys.stderr
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    routers = (_Router(terminal_out, log, 1, old_out), _Router(terminal_err, log, 2, old_err))
    sys.stdout, sys.stderr = routers
    root, detached = logging.getLogger(), _console_handlers()
    for handler in detached:
        root.removeHandler(handler)
    _active.append(log_file)
    try:
        yield log_file
    finally:
        _active.pop()
        for router in routers:
            router.detach()
        sys.stdout, sys.stderr = old_out, old_err
        for stream in (old_out, old_err):  # anything buffered there was meant for the log
            with contextlib.suppress(ValueError, OSError):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
        for stream in (terminal_out, terminal_err, log):
            with contextlib.suppress(ValueError, OSError):
                stream.close()
        for handler in detached:
            root.addHandler(handler)
