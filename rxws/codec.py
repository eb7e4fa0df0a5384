"""JSON parsing and serialising for frames: orjson when installed, else the json module.

Install ``rxws[fast]`` for orjson, which parses small messages several times faster.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["HAVE_ORJSON", "dump_json", "parse_json"]

try:
    import orjson as _orjson  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment, unused-ignore]

HAVE_ORJSON: bool = _orjson is not None
"""Whether orjson is installed and used."""


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
    return json.loads(frame)


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
