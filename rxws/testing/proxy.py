"""``FaultProxy``: a TCP proxy on loopback that cuts or blackholes links on demand.

Put it between a client and a server to fail the network for real, below the
websocket protocol: :meth:`FaultProxy.cut` resets every link (the client sees the TCP
connection break without a close frame), :meth:`FaultProxy.blackhole` silently drops
every byte both ways while the sockets stay open (a half-open link that only keepalive
pings or an idle timeout can detect), :meth:`FaultProxy.refuse` makes new links fail,
and :attr:`FaultProxy.latency` holds every byte for a while each way (a distant server).

``SilentServer`` accepts TCP connections and never answers: a server that never
completes the opening handshake.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .._resource import AsyncResource

__all__ = ["FaultProxy", "SilentServer"]


class _Link:
    __slots__ = ("client", "tasks", "upstream")

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class FaultProxy(AsyncResource):
    """Forwards TCP connections from ``127.0.0.1:port`` to ``target_host:target_port``.

    Args:
        target_host: Where to forward to.
        target_port: The target's port.
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one.
        latency: Seconds every byte is held before it is forwarded, each way.

    Attributes:
        accepted: Links accepted so far.
        latency: As above; it may be changed at any time (bytes already held keep
            their time).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
    ) -> None:
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
            raise ValueError(f"FaultProxy latency must be 0 or more seconds, got {latency!r}")
        self.latency = float(latency)
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = port
        self.accepted = 0
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._blackholed = False
        self._refusing = False

    async def _start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _aclose(self) -> None:
        """Stop listening and reset every link."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.cut()
        pending = [t for link in self._links for t in link.tasks] + list(self._handlers)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def url(self, path: str = "/stream", scheme: str = "ws") -> str:
        """The URL that reaches the target through this proxy.

        Args:
            path: Path (and query) on the target server.
            scheme: ``ws`` or ``wss``.
        """
        return f"{scheme}://{self.host}:{self.port}{path}"

    @property
    def links(self) -> int:
        """How many links are open now."""
        return len(self._links)

    def cut(self) -> None:
        """Reset every open link (TCP RST both ways, no close frame)."""
        for link in list(self._links):
            link.abort()

    def blackhole(self, on: bool = True) -> None:
        """Drop every byte both ways (``on=False`` forwards again); sockets stay open."""
        self._blackholed = on

    def refuse(self, on: bool = True) -> None:
        """Reset new links at once (``on=False`` accepts again)."""
        self._refusing = on

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            for w in (writer, up_writer):
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held = _Held(writer)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self._blackholed:
                    continue
                if self.latency > 0 or held.queue:
                    held.add(data, self.latency)
                else:
                    writer.write(data)
                    await writer.drain()
            await held.drained()
        except (ConnectionError, OSError):
            pass
        finally:
            held.cancel()
            # Half-close is not modelled: the end of one direction ends the link.
            writer.transport.abort()


class _Held:
    """Bytes of one direction held back for the proxy's latency, forwarded in order."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.queue: deque[tuple[float, bytes]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, data: bytes, latency: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + latency
        if self.queue:
            due = max(due, self.queue[-1][0])  # never overtake what is already held
        self.queue.append((due, data))
        self.empty.clear()
        if self.timer is None:
            self.timer = loop.call_at(due, self._forward)

    def _forward(self) -> None:
        self.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = self.queue
        while queue and queue[0][0] <= now:
            if not self.writer.transport.is_closing():
                self.writer.write(queue.popleft()[1])
            else:
                queue.clear()
        if queue:
            self.timer = loop.call_at(queue[0][0], self._forward)
        else:
            self.empty.set()

    async def drained(self) -> None:
        """Wait until every held byte is forwarded (the end of a stream comes after)."""
        await self.empty.wait()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.empty.set()


class SilentServer(AsyncResource):
    """Accepts TCP connections on loopback and never sends a byte.

    It reads (and ignores) what clients send, so it notices when a client gives up
    and closes its end: :attr:`open_connections` counts the clients still connected.

    Args:
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one.

    Attributes:
        accepted: Connections accepted so far.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def open_connections(self) -> int:
        """How many clients are connected now (they have not closed their end)."""
        return len(self._writers)

    @property
    def url(self) -> str:
        """A ws:// URL pointing at this server."""
        return f"ws://{self.host}:{self.port}/"

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _aclose(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
