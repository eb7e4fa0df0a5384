"""rxws's own Rx operators: survive drops, replace connections, detect dead links.

Each operator is pipeable and keeps its state per subscription, so one pipeline can
be subscribed many times. Time-based ones run on the scheduler given at subscribe
time, else on an ``AsyncIOScheduler`` for the running asyncio loop; none starts a
thread. A typical long-lived feed::

    feed = rxws.connect(url).pipe(
        idle_timeout(30),                                 # quiet link -> IdleTimeout
        rotate(every=12 * 3600, dedupe=lambda m: m["seq"]),  # replace it ahead of a cut
        reconnect(Backoff(initial=0.5, maximum=30)),      # drops, restarts, timeouts
    )

In the diagrams ``a b c`` are messages, ``1 2 3`` messages with those ids,
``|`` a completion, ``#`` an error, ``^`` a subscription, ``!`` a disposal.

**reconnect** -- resubscribe after a retryable error (and after a completion unless
``on_complete="complete"``), waiting ``backoff.delay(attempt)`` in between::

    source:   ^-a-b-#        ^-c-#          ^-d-e-
                      <delay 1>     <delay 2>
    output:   --a-b----------c--------------d-e-

An error that ``retryable`` refuses (e.g. ``HandshakeRejected`` 401) passes on at
once; ``max_attempts`` failures in a row end with ``ReconnectExhausted``; the count of
failures resets when a subscription stayed up ``backoff.reset_after`` seconds.

**rotate** -- make-before-break, exactly once: on a trigger (``every`` seconds, or
``when``), a second subscription (the candidate) comes up beside the first (the
primary); both deliver, each message once, and the primary goes once it caught up::

    trigger:    ------T--------------------------
    primary:    ^-1-2-3-4---5---6---7!              let go once it has caught up
    candidate:        ^---o-5-6-7-8---9-           o: open (past on_open)
    output:     --1-2-3-4---5-6-7-8---9-           each message once, first copy wins

A message's identity is ``dedupe(message)``, else the message itself; a copy of what
the other subscription delivered and nothing matched yet is dropped.

**idle_timeout** -- error with ``IdleTimeout`` when nothing arrives for ``seconds``::

    source:   ^-a-b----------------c
    output:   --a-b---------#             (# after ``seconds`` without a message)

**stream_filter** -- keep what :func:`rxws.matches` accepts::

    source:   --{s:BTC}--{s:ETH}--{s:BTC}--
    stream_filter([{"s": "BTC"}])
    output:   --{s:BTC}-----------{s:BTC}--
"""

from ..errors import is_retryable
from ._idle import idle_timeout
from ._reconnect import OnComplete, reconnect
from ._rotate import When, rotate
from ._stream_filter import stream_filter

__all__ = [
    "OnComplete",
    "When",
    "idle_timeout",
    "is_retryable",
    "reconnect",
    "rotate",
    "stream_filter",
]
