"""How the command line prints records, events and counts.

Two formats (``--output``):

- ``text``, for people: one record per line, fields separated by a tab. Keys and values
  are shown as UTF-8 text with C-style escapes (``\\t``, ``\\n``, ``\\r``, ``\\\\``, and
  ``\\xHH`` for every other non-printing character or byte that is not UTF-8), so a line
  is always one record and a tab always separates fields, whatever the data holds.
- ``json``, for programs: one JSON object per line (JSON Lines). A value that is UTF-8
  text is ``"value"``; any other value is ``"value_base64"`` (standard base64) instead.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kvgrpc.records import Record

_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}


def escape_text(text: str) -> str:
    """Returns ``text`` with tabs, newlines, backslashes and non-printing characters escaped.

    Lone surrogates (bytes that were not UTF-8, decoded with ``surrogateescape``) become
    ``\\xHH`` of the original byte.
    """
    if text.isprintable() and "\\" not in text:
        return text  # the common case, checked in C
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif not ch.isprintable():
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def escape_bytes(value: bytes) -> str:
    """A value as one line of text: UTF-8 where it is, ``\\xHH`` for other bytes."""
    return escape_text(value.decode("utf-8", "surrogateescape"))


def value_fields(value: bytes) -> dict[str, str]:
    """``{"value": text}`` for a UTF-8 value, else ``{"value_base64": ...}``."""
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value_base64": base64.b64encode(value).decode("ascii")}


def json_line(fields: dict[str, Any]) -> str:
    """One JSON Lines line (no trailing newline); non-ASCII text stays as it is."""
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def record_line(record: Record, fmt: str, *, keys_only: bool = False) -> str:
    """A record (from get or scan) as a line: ``KEY<TAB>VALUE`` or a JSON object."""
    if fmt == "json":
        fields: dict[str, Any] = {"key": record.key}
        if not keys_only:
            fields.update(value_fields(record.value))
        if record.version:
            fields["version"] = record.version
        return json_line(fields)
    if keys_only:
        return escape_text(record.key)
    return f"{escape_text(record.key)}\t{escape_bytes(record.value)}"


def event_line(event, fmt: str) -> str:
    """A watch event as ``REVISION<TAB>PUT|DELETE<TAB>KEY<TAB>VALUE`` or a JSON object."""
    if fmt == "json":
        fields: dict[str, Any] = {"revision": event.revision, "type": event.type,
                                  "key": event.key, "version": event.version}
        if event.type == "put":
            fields.update(value_fields(event.value))
        return json_line(fields)
    return (f"{event.revision}\t{event.type.upper()}\t{escape_text(event.key)}\t"
            f"{escape_bytes(event.value)}")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 record``, ``2 records``, ``0 records`` (digits only, for scripts that parse it)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
