"""The ``rxws`` command's entry point, quiet on Ctrl-C from its first moment.

The command line needs most of rxws, websockets and reactivex imported before it can
put its own signal handlers in place, about 0.2 s after the program starts. A Ctrl-C
in that time would end in the interpreter's KeyboardInterrupt traceback; here it ends
the program quietly, with status 0, as a Ctrl-C at any later moment does. This module
imports nothing until it is called (and ``import rxws`` itself imports no submodule).
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> int:
    """Run the command line on ``sys.argv``; a Ctrl-C while it loads exits quietly.

    Returns:
        The command's exit status (see :func:`rxws.cli.main`); 0 after a Ctrl-C.
    """
    try:
        from .cli import main as run

        return run()
    except KeyboardInterrupt:  # while the command line was being imported
        import signal

        # Nothing was started; a second Ctrl-C must not interrupt the exit either.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return 0
