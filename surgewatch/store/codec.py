"""Compact, lossless serialisation of a Mention, shared by both stores.

A stored mention is a JSON array in field order (not an object): about half the bytes of
``Mention.to_dict()`` and no per-key work.  ``created_at`` travels as epoch seconds (a float
round-trips a microsecond-precision datetime exactly at today's epochs).  The output is pure
ASCII (``\\uXXXX`` escapes) so odd outside text -- emoji, lone surrogates -- can never fail to
encode on its way to Redis or SQLite.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from collectors.base import Mention

# Field order of the stored array.  Append new Mention fields at the end only: decoding fills
# fields missing from older, shorter arrays with the dataclass defaults.
FIELDS = (
    "source", "id", "brand", "text", "created_at", "url", "author",
    "likes", "reposts", "replies", "score", "reach", "lang", "site_links",
)

try:  # the C encoder, built once: json.dumps rebuilds it on every call (~1 us per mention)
    from json.encoder import c_make_encoder, encode_basestring_ascii

    if c_make_encoder is None:
        raise ImportError
    _c_encode = c_make_encoder(None, None, encode_basestring_ascii, None, ":", ",", False, False, True)

    def _encode(row: list[Any]) -> str:
        return "".join(_c_encode(row, 0))

except ImportError:  # pragma: no cover - interpreters without the C accelerator
    _encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

_UTC = timezone.utc


def encode_mention(m: Mention, ts: float) -> str:
    """``ts`` is ``m.created_at.timestamp()``, which the caller has already computed."""
    return _encode([m.source, m.id, m.brand, m.text, ts, m.url, m.author, m.likes, m.reposts,
                    m.replies, m.score, m.reach, m.lang, m.site_links])


def decode_mention(payload: str | bytes) -> Mention:
    row = json.loads(payload)
    values = dict(zip(FIELDS, row))
    values["created_at"] = datetime.fromtimestamp(values["created_at"], _UTC)
    values["site_links"] = tuple(values.get("site_links") or ())
    return Mention(**values)


def bucket_start(ts: float, bucket_seconds: int) -> int:
    """floor(ts / bucket_seconds) * bucket_seconds, computed exactly (no float division)."""
    return int(ts // bucket_seconds) * bucket_seconds
