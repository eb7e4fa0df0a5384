"""Topics spread over as many connections as a server's limits require.

A :class:`WebSocketClient` given ``subscriptions=`` speaks in topics. This module keeps
them: which topic lives on which connection (a :class:`rxws.limits.Shards` plan), one
connection pipeline per shard, and for each live connection a *wire* that sends its
subscribe and unsubscribe frames, batched and paced::

    client.topic("btcusdt@trade")          reference counted per topic
      -> Topics.acquire                      first subscriber: plan it on a shard
      -> _Shard (index i)                    one pipeline: connect -> rotate -> reconnect
           -> _Wire per live connection      frames batched (topics_per_frame), paced
                                             (sliding window), remembered per request id
    frames in:  topic_of(msg) -> that topic's subscribers get payload(msg)
                reply_of(msg) -> a rejection errors the topics of its request;
                                 any reply may let a rotation's new connection count
                                 as open (below)

The connection attempts of every shard go through one :class:`rxws.limits.RateBudget`
per host (the url callable waits for it), so reconnects and rotations spend the same
budget as first connects. Each shard rotates make-before-break before the server's
``connection_lifetime`` ends, staggered so that shards never rotate together.

A connection being rotated in counts as open (and so may take over from the old one)
only once the server has answered every subscribe frame sent on it: a frame that is
sent is not yet processed, and a message the old connection alone carried would be
lost if it were let go before then. A server that has never answered a request (a
protocol without replies) is not waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from ._signal import hold_open
from .errors import ConnectionLost, SubscriptionRejected
from .events import Event, Retrying, Rotated
from .limits import Limits, RateBudget, Shards
from .protocols import Subscriptions, build_requests

__all__ = ["ConnectionStats", "Topics"]

log = logging.getLogger("rxws.client")

# Frames are paced by a sliding window a little stricter than the server's: at most
# 80 % of its rate (rounded down, at least one) in any window 5 % longer than one
# second, so the server's own count, which also takes in pings and pongs and sees
# frames with some jitter, stays under its limit. A burst of that size goes out at once.
_RATE_SHARE = 0.8
_WINDOW = 1.05
# Rotate this far into a connection's lifetime, less a per-shard stagger of up to
# _STAGGER of the lifetime, so shards never rotate together.
_LIFETIME_SHARE = 0.75
_STAGGER = 0.1
_GOLDEN = 0.6180339887498949


def _pace(frames: int) -> RateBudget:
    return RateBudget(max(1, frames), _WINDOW)


class ConnectionStats:
    """Counters of one connection of a sharded client.

    Attributes:
        index: The connection's index (as in the ``connection`` field of events).
        topics: Topics planned on it now.
        messages: Messages it delivered.
        reconnects: Reconnect attempts after a drop.
        rotations: Completed rotations.
        rejected: Topics the server refused.
    """

    __slots__ = ("index", "messages", "reconnects", "rejected", "rotations", "topics")

    def __init__(self, index: int) -> None:
        self.index = index
        self.topics = 0
        self.messages = 0
        self.reconnects = 0
        self.rotations = 0
        self.rejected = 0

    def __repr__(self) -> str:
        return (
            f"ConnectionStats(index={self.index}, topics={self.topics}, "
            f"messages={self.messages}, reconnects={self.reconnects}, "
            f"rotations={self.rotations}, rejected={self.rejected})"
        )


class _Wire:
    """One live connection of a shard: what it subscribed, and the frames it sends."""

    def __init__(self, shard: _Shard, conn: Any, release: Callable[[], None] | None) -> None:
        self.shard = shard
        self.conn = conn
        self.sent: dict[str, None] = {}  # topics subscribed on this connection
        # A rotation waits for this connection to open: call release once the server
        # has answered the subscribe frames in ``unanswered``.
        self.release = release
        self.unanswered: set[int] = set()
        self.settled = False
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def kick(self) -> None:
        """Bring this connection's subscriptions in line with its shard's topics."""
        if self.closed:
            return
        self.idle.clear()
        self.wake.set()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"rxws shard {self.shard.index} frames"
            )

    async def settle(self) -> None:
        """Wait until every frame this connection owes is sent."""
        self.kick()
        await self.idle.wait()

    def answered(self, request_id: int) -> None:
        """The server replied to request ``request_id`` sent on this connection."""
        self.unanswered.discard(request_id)
        self.open_when_answered()

    def open_when_answered(self) -> None:
        """Release the rotation's wait once every subscribe frame sent is answered."""
        release = self.release
        if release is None or not self.settled:
            return
        if self.unanswered and self.shard.owner.acknowledges:
            return
        self.release = None
        self._stop_waiting()
        release()

    def _stop_waiting(self) -> None:
        waiting = self.shard.owner.waiting
        for request_id in self.unanswered:
            waiting.pop(request_id, None)
        self.unanswered.clear()

    def close(self) -> None:
        self.closed = True
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        self.idle.set()
        self.release = None
        self._stop_waiting()

    async def _run(self) -> None:
        try:
            while not self.closed:
                self.wake.clear()
                wanted = self.shard.topics
                adds = [t for t in wanted if t not in self.sent]
                drops = [t for t in self.sent if t not in wanted]
                if drops:
                    await self._send(drops, unsubscribe=True)
                    for topic in drops:
                        self.sent.pop(topic, None)
                if adds:
                    self.sent.update(dict.fromkeys(adds))
                    await self._send(adds, unsubscribe=False)
                if not self.wake.is_set():
                    self.idle.set()
                    await self.wake.wait()
        except asyncio.CancelledError:
            raise
        except (TypeError, ValueError) as exc:  # the protocol built no usable frame
            log.error("shard %d: could not build subscription frames: %s", self.shard.index, exc)
            self.shard.owner.report(exc)
        except Exception as exc:  # the connection went away: its successor resends
            log.debug("shard %d: sending frames stopped: %s", self.shard.index, exc)
        finally:
            self.idle.set()

    async def _send(self, topics: list[str], *, unsubscribe: bool) -> None:
        owner = self.shard.owner
        requests = build_requests(
            owner.protocol, topics, owner.next_request_id(), unsubscribe=unsubscribe
        )
        owner.request_ids_used(len(requests))
        loop = asyncio.get_running_loop()
        for request in requests:
            pace = self.shard.pace
            if pace is not None:
                delay = pace.delay(loop.time())
                while delay > 0:
                    await asyncio.sleep(delay)
                    delay = pace.delay(loop.time())
                pace.take(loop.time())
            if not unsubscribe:
                owner.requests[request.id] = request.topics
                if self.release is not None:
                    self.unanswered.add(request.id)
                    owner.waiting[request.id] = self
            await self.conn.send(owner.serialize(request.frame))


class _Shard:
    """One connection's worth of topics, and the pipeline that carries them."""

    def __init__(self, owner: Topics, index: int) -> None:
        self.owner = owner
        self.index = index
        self.topics: dict[str, None] = {}  # in the order they were asked for
        self.wires: set[_Wire] = set()
        self.subscription: abc.DisposableBase | None = None
        self.stats = ConnectionStats(index)
        rate = owner.limits.messages_per_second
        self.pace = _pace(int(rate * _RATE_SHARE)) if rate else None

    def kick(self) -> None:
        for wire in list(self.wires):
            wire.kick()

    def slow_down(self) -> None:
        """The server said we send too fast: halve this shard's pace."""
        if self.pace is None:
            return
        frames, seconds = self.pace.windows[0]
        if frames > 1:
            frames //= 2
        else:
            seconds *= 2
        self.pace = RateBudget(frames, seconds)
        log.warning(
            "connection %d was closed for sending too fast; sending at most %d frames in "
            "%.3g s on it from now on (lower messages_per_second in limits=)",
            self.index,
            frames,
            seconds,
        )


class Topics:
    """The topics of one sharded client, and the connections that carry them.

    Args:
        protocol: How topics become frames and how messages name their topic.
        limits: The protocol's limits with the user's overrides.
        serialize: Turns a frame the protocol built into ``str``/``bytes``.
        pipeline: Builds the connection pipeline of shard ``index``; it calls
            :meth:`on_open` on every new connection and reports events through
            :meth:`tag`.
        report: Where non-fatal errors go (the client's ``errors``).
    """

    def __init__(
        self,
        protocol: Subscriptions,
        limits: Limits,
        serialize: Callable[[Any], Any],
        report: Callable[[Exception], None],
    ) -> None:
        self.protocol = protocol
        self.limits = limits
        self.serialize = serialize
        self.report = report
        capacity = limits.streams_per_connection or 1 << 30
        self.plan = Shards(capacity)
        self.shards: dict[int, _Shard] = {}
        self.subscribers: dict[str, list[abc.ObserverBase[Any]]] = {}
        self.requests: dict[int, tuple[str, ...]] = {}  # subscribe frames not answered
        self.waiting: dict[int, _Wire] = {}  # those a rotation waits for, by connection
        self.acknowledges = False  # the server has answered a request of ours
        self._next_id = 1
        self.stats: list[ConnectionStats] = []  # one per shard, in index order
        self.observer: abc.ObserverBase[Any] | None = None  # the feed, while it runs
        self.pipeline: Callable[[int], Observable[Any]] | None = None

    # ------------------------------------------------------------------ requests

    def next_request_id(self) -> int:
        return self._next_id

    def request_ids_used(self, count: int) -> None:
        self._next_id += count

    # ------------------------------------------------------------------ topics

    def acquire(self, topic: str, observer: abc.ObserverBase[Any]) -> None:
        """Add a subscriber of ``topic``; the first one subscribes it on the server."""
        observers = self.subscribers.get(topic)
        if observers is not None:
            observers.append(observer)
            return
        self.subscribers[topic] = [observer]
        index = self.plan.add(topic)
        shard = self.shards.get(index)
        if shard is None:
            shard = self.shards[index] = _Shard(self, index)
            self.stats.append(shard.stats)
            self.stats.sort(key=lambda stats: stats.index)
        shard.topics[topic] = None
        shard.stats.topics = len(shard.topics)
        if self.observer is not None:
            if shard.subscription is None:
                self._start(shard)
            else:
                shard.kick()

    def release(self, topic: str, observer: abc.ObserverBase[Any]) -> None:
        """Remove a subscriber; the last one unsubscribes the topic on the server."""
        observers = self.subscribers.get(topic)
        if observers is None or observer not in observers:
            return
        observers.remove(observer)
        if not observers:
            self._forget(topic)

    def _forget(self, topic: str) -> None:
        del self.subscribers[topic]
        index = self.plan.index_of(topic)
        if index is None:
            return
        self.plan.remove(topic)
        shard = self.shards[index]
        shard.topics.pop(topic, None)
        shard.stats.topics = len(shard.topics)
        shard.kick()

    # ------------------------------------------------------------------ the feed

    def observable(self, pipeline: Callable[[int], Observable[Any]]) -> Observable[Any]:
        """The merged messages of every shard; subscribing runs them."""
        self.pipeline = pipeline

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self.observer = observer
            for shard in list(self.shards.values()):
                if shard.topics and shard.subscription is None:
                    self._start(shard)

            def dispose() -> None:
                self.observer = None
                for shard in self.shards.values():
                    subscription, shard.subscription = shard.subscription, None
                    if subscription is not None:
                        subscription.dispose()
                    for wire in list(shard.wires):
                        wire.close()
                    shard.wires.clear()

            return Disposable(dispose)

        return Observable(subscribe)

    def _start(self, shard: _Shard) -> None:
        assert self.pipeline is not None
        observer = self.observer
        assert observer is not None
        topic_of = self.protocol.topic_of
        payload = self.protocol.payload
        reply_of = self.protocol.reply_of
        subscribers = self.subscribers
        stats = shard.stats
        deliver = observer.on_next

        def on_next(msg: Any) -> None:
            stats.messages += 1
            topic = topic_of(msg)
            if topic is not None:
                observers = subscribers.get(topic)
                if observers:
                    item = payload(msg)
                    for target in observers:
                        target.on_next(item)
            else:
                reply = reply_of(msg)
                if reply is not None:
                    self._answered(reply.id)
                    if reply.error is not None:
                        self._rejected(reply.id, reply.error)
                    elif reply.id is not None:
                        self.requests.pop(reply.id, None)
            deliver(msg)

        def on_error(error: Exception) -> None:
            shard.subscription = None
            observer.on_error(error)

        def on_completed() -> None:
            shard.subscription = None
            observer.on_completed()

        shard.subscription = self.pipeline(shard.index).subscribe(on_next, on_error, on_completed)

    def _answered(self, request_id: int | None) -> None:
        if request_id is None or request_id not in self.requests:
            return
        self.acknowledges = True
        wire = self.waiting.pop(request_id, None)
        if wire is not None:
            wire.answered(request_id)

    def _rejected(self, request_id: int | None, message: str) -> None:
        topics = self.requests.pop(request_id, ()) if request_id is not None else ()
        error = SubscriptionRejected(list(topics) or ["(unknown request)"], message)
        log.warning("%s", error)
        if not topics:
            self.report(error)
            return
        for topic in topics:
            observers = self.subscribers.get(topic)
            if not observers:
                continue
            index = self.plan.index_of(topic)
            if index is not None:
                shard = self.shards[index]
                shard.stats.rejected += 1
                for wire in shard.wires:  # the server holds no subscription to undo
                    wire.sent.pop(topic, None)
            self._forget(topic)
            for target in list(observers):
                try:
                    target.on_error(error)
                except Exception:
                    log.exception("a topic subscriber raised on_error; ignored")

    # ------------------------------------------------------------------ connections

    async def on_open(self, index: int, conn: Any) -> Callable[[], None]:
        """Subscribe shard ``index``'s topics on a new connection of it.

        Returns:
            What to call when that connection has ended.
        """
        shard = self.shards[index]
        wire = _Wire(shard, conn, hold_open())
        shard.wires.add(wire)
        await wire.settle()
        wire.settled = True
        wire.open_when_answered()

        def ended() -> None:
            wire.close()
            shard.wires.discard(wire)

        return ended

    def on_lost(self, index: int, error: BaseException | None) -> None:
        """A connection of shard ``index`` ended with ``error``."""
        shard = self.shards.get(index)
        if shard is not None and isinstance(error, ConnectionLost) and error.code == 1008:
            shard.slow_down()

    def budget(self, url: str) -> RateBudget | None:
        window = self.limits.connections_per_window
        if window is None:
            return None
        return RateBudget.for_url(url, window[0], window[1])

    def lifetime_rotation(self, index: int) -> float | None:
        """Seconds after which connection ``index`` is replaced, if the server cuts them."""
        lifetime = self.limits.connection_lifetime
        if lifetime is None:
            return None
        stagger = (index * _GOLDEN) % 1.0 * _STAGGER
        return lifetime * (_LIFETIME_SHARE - stagger)

    def count(self, index: int, event: Event) -> None:
        """Count a status event of connection ``index`` in its stats."""
        stats = self.shards[index].stats
        if isinstance(event, Retrying):
            stats.reconnects += 1
        elif isinstance(event, Rotated):
            stats.rotations += 1

    def identity(self, message: Any) -> Hashable | None:
        """A rotation's identity of ``message``: none for replies, else its text."""
        if self.protocol.reply_of(message) is not None:
            return None
        return repr(message)
