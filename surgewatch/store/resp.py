"""Send an ingest batch to Redis without redis-py's per-argument packing.

redis-py's pure-Python command packer costs about 1 us per argument; an ingest batch has four
arguments per mention, so packing alone took longer than Redis took to run the whole script.
:class:`PackedArgs` carries arguments the caller has already written in RESP (the Redis wire
format: ``$<byte length>\\r\\n<bytes>\\r\\n`` per argument), built with one f-string per mention;
:class:`FragmentPacker` splices them after the command's few ordinary arguments.  Every other
command goes through redis-py's own packer unchanged, so retries, NOSCRIPT reloads and
connection handling all stay redis-py's.

Reference: https://redis.io/docs/latest/develop/reference/protocol-spec/#bulk-strings
"""
from __future__ import annotations

from typing import Any

from redis.connection import PythonRespSerializer
from redis.utils import HIREDIS_AVAILABLE

try:
    from redis._parsers.encoders import Encoder
except ImportError:  # pragma: no cover - moved in some redis-py release
    from redis.connection import Encoder  # type: ignore[attr-defined,no-redef]


class PackedArgs:
    """``count`` arguments already serialised as RESP bulk strings in ``data``."""

    __slots__ = ("count", "data")

    def __init__(self, count: int, data: bytes):
        self.count = count
        self.data = data


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    raise TypeError(f"cannot send a {type(value).__name__} to Redis")


def bulk(value: str) -> str:
    """One RESP bulk string, as text (the caller encodes the whole batch once)."""
    n = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    return f"${n}\r\n{value}\r\n"


class FragmentPacker:
    """A redis-py ``command_packer``: passes ordinary commands to redis-py's packer, and
    writes a command whose last argument is :class:`PackedArgs` with the fragment appended."""

    def __init__(self) -> None:
        if HIREDIS_AVAILABLE:
            from redis.connection import HiredisRespSerializer

            self._fallback: Any = HiredisRespSerializer()
        else:
            self._fallback = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)

    def pack(self, *args: Any) -> list[bytes]:
        if not args or type(args[-1]) is not PackedArgs:
            return self._fallback.pack(*args)
        fragment: PackedArgs = args[-1]
        head = args[:-1]
        out = [b"*%d\r\n" % (len(head) + fragment.count)]
        for value in head:
            b = _to_bytes(value)
            out.append(b"$%d\r\n%b\r\n" % (len(b), b))
        # two chunks: the batch is sent as is, never copied into a bigger buffer
        return [b"".join(out), fragment.data]
