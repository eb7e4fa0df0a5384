"""Transports: how rxws reaches the network, behind one small interface.

:class:`Link` is an open connection that pushes frames to a callback; a
:class:`Transport` opens links or adopts connections someone else opened. ``transport=``
on :func:`rxws.connect` and :class:`rxws.WebSocketClient` takes a name or a
:class:`Transport` object:

- ``"websockets"`` (:mod:`rxws.transports.websockets`): the default and the reference;
- ``"picows"`` (:mod:`rxws.transports.picows`, extra ``rxws[picows]``): the fast one,
  held to the same behaviour by the same tests and the Autobahn|Testsuite
  (``compliance/``).

A transport module is imported only when it is chosen, so the picows extra stays
optional.
"""

from .base import FrameHandler, Link, Transport, adopt, get_transport, register_transport

__all__ = ["FrameHandler", "Link", "Transport", "adopt", "get_transport", "register_transport"]
