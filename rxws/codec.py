"""JSON parsing and serialising for frames: orjson when installed, else the json module.

Install ``rxws[fast]`` for orjson, which parses small messages several times faster.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.decoder import JSONDecoder
from json.scanner import make_scanner
from typing import Any

__all__ = ["HAVE_ORJSON", "dump_json", "parse_json"]

try:
    import orjson as _orjson  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment, unused-ignore]

HAVE_ORJSON: bool = _orjson is not None
"""Whether orjson is installed and used."""

# The scanner that json.loads ends up calling (C, when the _json extension is there).
# Called directly it skips json.loads's Python layers (type checks, the decoder's two
# whitespace matches), about 0.9 us of a 2.4 us parse of a 180-byte message.
_scan: Callable[[str, int], tuple[Any, int]] = make_scanner(JSONDecoder())  # type: ignore[arg-type]


def parse_json(frame: str | bytes) -> Any:
    """Parse one text or binary frame as JSON.

    Args:
        frame: The frame's payload.

    Returns:
        The decoded value.

    Raises:
        ValueError: The frame is not valid JSON (``orjson.JSONDecodeError`` and
            ``json.JSONDecodeError`` both subclass it).
    """
    if HAVE_ORJSON:
        return _orjson.loads(frame)
    if type(frame) is str:
        # A text that is one JSON value from its first character to its last, as a
        # server writes it: the scanner alone. Anything else (leading or trailing
        # whitespace, bytes, invalid JSON) goes to json.loads, which parses it or
        # raises what it always raises (an error inside a value is raised by the same
        # scanner, at the same position, either way).
        try:
            value, end = _scan(frame, 0)
        except StopIteration:
            end = -1
        if end == len(frame):
            return value
    return json.loads(frame)


def bytes_parser(parse: Callable[[Any], Any]) -> Callable[[bytes], Any] | None:
    """For :func:`parse_json` on orjson: ``orjson.loads``, to parse a text frame's UTF-8 bytes.

    orjson checks that bytes are valid UTF-8 before parsing them, and what it parses
    from valid bytes is what it parses from their decoded text; None for any other
    ``parse`` (it gets ``str`` for text frames).
    """
    if parse is parse_json and HAVE_ORJSON:
        loads: Callable[[bytes], Any] = _orjson.loads
        return loads
    return None


def direct_parser(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse`` itself, or for :func:`parse_json` on orjson, ``orjson.loads``: one call less.

    For rxws's own per-frame path (resolved once per connection, not per frame);
    ``orjson.loads`` raises what :func:`parse_json` raises, since that is what it calls.
    """
    return bytes_parser(parse) or parse


def dump_json(value: Any) -> str:
    """Serialise ``value`` as compact JSON text, for a text frame.

    Args:
        value: Anything JSON can represent.

    Returns:
        The JSON text.

    Raises:
        TypeError: ``value`` holds something JSON cannot represent.
    """
    if HAVE_ORJSON:
        text: str = _orjson.dumps(value).decode()
        return text
    return json.dumps(value, separators=(",", ":"))
