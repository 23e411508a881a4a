"""The one base class of every problem a user can fix (bad flag, path, file, image, config).

Each module raises its own subclass with the offending value and what to do; the CLI
prints any of them as a single line and exits with status 2. Kept free of heavy imports so
the CLI can catch these without loading torch.
"""

import contextlib
from collections.abc import Iterator

# exit codes of every command
EXIT_OK = 0
EXIT_UNUSABLE = 1  # validate / check-data: some checkpoint or image is unusable
EXIT_USER_ERROR = 2  # a problem the user can fix, reported in one line
EXIT_SKIPPED = 3  # finished, but undecodable images were skipped
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: progress saved


@contextlib.contextmanager
def stop_signals(handler) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM handled by `handler` within the block, the previous handlers
    restored after it: signal.default_int_handler makes both a KeyboardInterrupt (how a command
    stops, exit 130), signal.SIG_IGN ignores both. Outside the main thread nothing changes."""
    import signal

    wanted = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = [signal.signal(s, handler) for s in wanted]
    except ValueError:  # not the main thread: signal handlers cannot be set there
        yield
        return
    try:
        yield
    finally:
        for s, old in zip(wanted, previous):
            signal.signal(s, old)


class UserError(ValueError):
    """A problem the user can fix; its message names the problem and the fix."""


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def short_repr(value: object) -> str:
    """repr() for messages, bounded: a hostile YAML or pickle can make a full repr gigabytes long."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxstring, r.maxother = 2, 6, 6, 6, 60, 60
    text = r.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def printable(text: str) -> str:
    """`text` safe on one terminal line: newlines, escape sequences and other unprintable
    characters (from a hostile file name or an exception a program raises) written as escapes."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text
    )


def first_line(exc: BaseException) -> str:
    """'TypeName: the first sentence of the message' (bounded, printable), for one-line reasons."""
    text = str(exc).strip()
    return printable(
        f"{type(exc).__name__}: {text.splitlines()[0].split('. ')[0][:120]}" if text else type(exc).__name__
    )
