"""SqliteStore: the embedded default (one file, no server).

Safe to share between processes and threads: WAL lets readers work while one writer commits, and
``busy_timeout`` makes a writer wait for the lock instead of failing.  Each (process, thread)
opens its own connection lazily: SQLite connections must not cross a fork
(https://www.sqlite.org/howtocorrupt.html#_carrying_an_open_database_connection_across_a_fork_),
so a store built before Celery forks its prefork children still works inside them.  Writes that
read first (dedup, claims) run in ``BEGIN IMMEDIATE`` transactions: they take the write lock up
front, so two processes can never both decide that the same mention or claim is new.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

from surgewatch.collectors.base import Mention

from .base import Delivery, IngestResult
from .codec import bucket_start, decode_mention, encode_mention, fold_points, micros
from .errors import StoreError
from surgewatch.incidents.model import Incident

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_mentions (
    source TEXT NOT NULL, brand TEXT NOT NULL, id BLOB NOT NULL, seen_at REAL NOT NULL,
    PRIMARY KEY (source, brand, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_mentions_by_age ON seen_mentions (seen_at);
CREATE TABLE IF NOT EXISTS counts (
    brand TEXT NOT NULL, source TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (brand, bucket, source)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent (
    brand TEXT NOT NULL, source TEXT NOT NULL, id BLOB NOT NULL, created_at REAL NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (brand, source, id)
);
CREATE INDEX IF NOT EXISTS recent_by_time ON recent (brand, created_at);
CREATE TABLE IF NOT EXISTS cursors (
    source TEXT NOT NULL, brand TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (source, brand)
);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS heartbeats (name TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, brand TEXT NOT NULL, status TEXT NOT NULL, opened_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_brand ON incidents (brand, opened_at);
CREATE INDEX IF NOT EXISTS incidents_by_time ON incidents (opened_at);
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY, status TEXT NOT NULL, claimed_at REAL, lease_until REAL, receipt TEXT
);
"""
# The delivery log's columns, added to a deliveries table of an older file (claims and marks only).
# ``body`` is the Delivery record (JSON); rows without one are plain claims (locks, reminders).
_DELIVERY_COLUMNS = {"incident": "TEXT", "created_at": "REAL", "body": "TEXT"}

# Connections inherited through fork() are kept referenced, never closed: closing one in the
# child could release locks or checkpoint the WAL on behalf of the parent.
_INHERITED: list[sqlite3.Connection] = []

# SQLite's default limit on host parameters in one statement is 32766 (999 before 3.32).
_CHUNK = 900


def _id(value: str) -> bytes:
    """Mention ids are outside text and may hold lone surrogates, which sqlite3 refuses to bind
    as TEXT: store the id's exact bytes instead."""
    return value.encode("utf-8", "surrogatepass")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


_IN_CHUNK = 500  # names per IN (...) query, below SQLite's bound-parameter limit


class SqliteStore:
    """The Store protocol in one SQLite file."""

    def __init__(self, path: str, bucket_seconds: int = 60, dedup_ttl: float = 7 * 86400,
                 recent_cap: int = 500, *, busy_timeout: float = 30.0):
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        if path in ("", ":memory:") or path.startswith("file::memory:"):
            # every thread and process opens its own connection: an in-memory database would
            # silently be a different, empty one for each of them
            raise ValueError("SqliteStore needs a file path; an in-memory database cannot be shared")
        self.path = os.path.abspath(path)
        self.bucket_seconds = int(bucket_seconds)
        self.dedup_ttl = float(dedup_ttl)
        self.recent_cap = int(recent_cap)
        self._busy_ms = int(busy_timeout * 1000)
        self._local = threading.local()
        self._lock = threading.Lock()  # guards _conns
        self._pid = os.getpid()
        self._conns: list[tuple[int, sqlite3.Connection]] = []
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with self._errors("creating the schema"):
            conn = self._conn()
            conn.executescript(_SCHEMA)
            have = {row[1] for row in conn.execute("PRAGMA table_info(deliveries)")}
            for column, kind in _DELIVERY_COLUMNS.items():
                if column not in have:
                    try:
                        conn.execute(f"ALTER TABLE deliveries ADD COLUMN {column} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise
            conn.execute("CREATE INDEX IF NOT EXISTS deliveries_by_incident ON deliveries (incident, created_at)")
            # the incident's version, for compare-and-swap updates (replace_incident)
            if "version" not in {row[1] for row in conn.execute("PRAGMA table_info(incidents)")}:
                try:
                    conn.execute("ALTER TABLE incidents ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # -- connections ----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        pid = os.getpid()
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == pid:
            return conn
        if self._pid != pid:
            # first use after a fork: our parent's connections (and lock, which another of its
            # threads may have held at the fork) are not ours to use
            self._lock = threading.Lock()
            _INHERITED.extend(c for _, c in self._conns)
            self._conns, self._pid = [], pid
        # isolation_level=None: we issue BEGIN ourselves, so each batch is exactly one transaction
        conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a process crash; only an OS crash or power cut
        # may lose the last transactions (https://www.sqlite.org/pragma.html#pragma_synchronous)
        conn.execute("PRAGMA synchronous = NORMAL")
        local.conn, local.pid = conn, pid
        with self._lock:
            self._conns.append((pid, conn))
        return conn

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            # "database is locked" after busy_timeout, disk full, unreadable file...
            raise StoreError(f"SQLite store {self.path} failed while {doing}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"SQLite store {self.path} is unusable ({doing}): {exc}", permanent=True) from None

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken at BEGIN (waiting up to busy_timeout)."""
        with self._errors(doing):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # some errors (disk full) have already rolled back
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- mentions -------------------------------------------------------------------------------
    def ingest(self, mentions: Sequence[Mention], *, count: bool = True) -> IngestResult:
        if not mentions:
            return IngestResult(0, 0)
        now = time.time()
        bs = self.bucket_seconds
        with self._write("ingesting mentions") as conn:
            # lazy expiry: forget ids older than the TTL before looking any up
            conn.execute("DELETE FROM seen_mentions WHERE seen_at < ?", (now - self.dedup_ttl,))
            # dedup is per (source, brand, id): a post naming two brands is a mention of each
            by_group: dict[tuple[str, str], list[bytes]] = {}
            for m in mentions:
                by_group.setdefault((m.source, m.brand), []).append(_id(m.id))
            known: set[tuple[str, str, bytes]] = set()
            for (source, brand), ids in by_group.items():
                unique = list(dict.fromkeys(ids))
                for i in range(0, len(unique), _CHUNK):
                    chunk = unique[i:i + _CHUNK]
                    rows = conn.execute(
                        "SELECT id FROM seen_mentions WHERE source = ? AND brand = ? "
                        f"AND id IN ({','.join('?' * len(chunk))})", (source, brand, *chunk))
                    known.update((source, brand, r[0]) for r in rows)
            seen_rows: list[tuple[str, str, bytes, float]] = []
            recent_rows: list[tuple[str, str, bytes, float, str]] = []
            counts: dict[tuple[str, str, int], int] = {}
            for m in mentions:
                k = (m.source, m.brand, _id(m.id))
                if k in known:
                    continue
                known.add(k)  # a repeat later in the same batch is a duplicate too
                ts = m.created_at.timestamp()
                seen_rows.append((*k, now))
                recent_rows.append((m.brand, m.source, k[2], ts, encode_mention(m, str(micros(ts)))))
                ck = (m.brand, m.source, bucket_start(ts, bs))
                counts[ck] = counts.get(ck, 0) + 1
            if seen_rows:
                # REPLACE: an id whose entry expired is counted again, with a fresh seen_at
                conn.executemany("INSERT OR REPLACE INTO seen_mentions VALUES (?, ?, ?, ?)", seen_rows)
                if count:  # else a sample (X's posts): its source reports the counts
                    conn.executemany(
                        "INSERT INTO counts VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (brand, bucket, source) DO UPDATE SET n = n + excluded.n",
                        [(b, s, t, n) for (b, s, t), n in counts.items()])
                conn.executemany("INSERT OR REPLACE INTO recent VALUES (?, ?, ?, ?, ?)", recent_rows)
                for brand in {r[0] for r in recent_rows}:
                    self._trim_recent(conn, brand)
        return IngestResult(new=len(seen_rows), duplicates=len(mentions) - len(seen_rows))

    def _trim_recent(self, conn: sqlite3.Connection, brand: str) -> None:
        # the cap-th newest row's time; everything older goes (ties at the edge kept by rowid)
        conn.execute(
            "DELETE FROM recent WHERE brand = ?1 AND rowid NOT IN "
            "(SELECT rowid FROM recent WHERE brand = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2)",
            (brand, self.recent_cap))

    def set_volume(self, brand: str, source: str, points: Sequence[tuple[float, int]]) -> None:
        per_bucket = fold_points(points, self.bucket_seconds)
        if not per_bucket:
            return
        with self._write("saving volume") as conn:
            conn.executemany("INSERT OR REPLACE INTO counts VALUES (?, ?, ?, ?)",
                             [(brand, source, b, n) for b, n in per_bucket.items()])

    def counts(self, brand: str, start: float, end: float) -> dict[str, dict[float, int]]:
        with self._errors("reading counts"):
            rows = self._conn().execute(
                "SELECT source, bucket, n FROM counts WHERE brand = ? AND bucket >= ? AND bucket < ? "
                "AND n != 0 ORDER BY source, bucket", (brand, start, end)).fetchall()
        out: dict[str, dict[float, int]] = {}
        for source, b, n in rows:
            out.setdefault(source, {})[float(b)] = n
        return out

    def counts_many(self, windows: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, dict[float, int]]]:
        # In-process: a query per brand costs microseconds, there is no round trip to save.
        out = {b: self.counts(b, start, end) for b, (start, end) in windows.items()}
        return {b: c for b, c in out.items() if c}

    def recent(self, brand: str, limit: int = 50) -> list[Mention]:
        limit = min(limit, self.recent_cap)
        if limit <= 0:
            return []
        with self._errors("reading recent mentions"):
            rows = self._conn().execute(
                "SELECT payload FROM recent WHERE brand = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (brand, limit)).fetchall()
        return [decode_mention(r[0]) for r in rows]

    # -- cursors and state ----------------------------------------------------------------------
    def _get_json(self, sql: str, params: tuple[Any, ...], doing: str) -> Any:
        with self._errors(doing):
            row = self._conn().execute(sql, params).fetchone()
        return None if row is None else json.loads(row[0])

    def get_cursor(self, source: str, brand: str) -> dict[str, Any] | None:
        return self._get_json("SELECT value FROM cursors WHERE source = ? AND brand = ?",
                              (source, brand), "reading a cursor")

    def set_cursor(self, source: str, brand: str, cursor: dict[str, Any]) -> None:
        with self._errors("saving a cursor"):
            self._conn().execute("INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)",
                                 (source, brand, _dumps(cursor)))

    def get_state(self, name: str) -> dict[str, Any] | None:
        return self._get_json("SELECT value FROM state WHERE name = ?", (name,), "reading state")

    def get_states(self, names: Sequence[str]) -> list[dict[str, Any] | None]:
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(names))
        with self._errors("reading state"):
            for i in range(0, len(unique), _IN_CHUNK):
                part = unique[i:i + _IN_CHUNK]
                found.update(self._conn().execute(
                    f"SELECT name, value FROM state WHERE name IN ({','.join('?' * len(part))})", part).fetchall())
        return [json.loads(found[n]) if n in found else None for n in names]

    def set_state(self, name: str, value: dict[str, Any]) -> None:
        with self._errors("saving state"):
            self._conn().execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (name, _dumps(value)))

    def set_states(self, values: Mapping[str, dict[str, Any]]) -> None:
        if not values:
            return
        with self._write("saving state") as conn:
            conn.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)",
                             [(k, _dumps(v)) for k, v in values.items()])

    def list_state(self, prefix: str) -> dict[str, dict[str, Any]]:
        # a range scan on the primary key, not LIKE: "%" and "_" in the prefix stay literal
        with self._errors("listing state"):
            rows = self._conn().execute(
                "SELECT name, value FROM state WHERE name >= ? ORDER BY name", (prefix,)).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for name, value in rows:
            if not name.startswith(prefix):
                break
            out[name] = json.loads(value)
        return out

    # -- incidents ------------------------------------------------------------------------------
    def save_incident(self, incident: Incident) -> None:
        self._check_incident(incident)
        with self._errors("saving an incident"):
            self._conn().execute(
                "INSERT OR REPLACE INTO incidents (id, brand, status, opened_at, body, version) VALUES (?, ?, ?, ?, ?, ?)",
                (str(incident["id"]), incident["brand"], incident["status"], float(incident["opened_at"]),
                 _dumps(incident), int(incident.get("version") or 0)))

    def replace_incident(self, incident: Incident, expected_version: int) -> bool:
        self._check_incident(incident)
        expected = int(expected_version)
        incident = {**incident, "version": expected + 1}
        # the version column is the compare-and-swap: the write lock is taken at BEGIN, so no other
        # writer can slip in between the check and the write
        with self._write("saving an incident") as conn:
            row = conn.execute("SELECT version FROM incidents WHERE id = ?", (str(incident["id"]),)).fetchone()
            if (row[0] if row else 0) != expected:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO incidents (id, brand, status, opened_at, body, version) VALUES (?, ?, ?, ?, ?, ?)",
                (str(incident["id"]), incident["brand"], incident["status"], float(incident["opened_at"]),
                 _dumps(incident), expected + 1))
        return True

    @staticmethod
    def _check_incident(incident: Incident) -> None:
        missing = [k for k in ("id", "brand", "status", "opened_at") if k not in incident]
        if missing:
            raise ValueError(f"incident lacks {', '.join(missing)}")

    def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        return self._get_json("SELECT body FROM incidents WHERE id = ?", (incident_id,), "reading an incident")

    def open_incident(self, brand: str) -> dict[str, Any] | None:
        return self._get_json(
            "SELECT body FROM incidents WHERE brand = ? AND status = 'open' "
            "ORDER BY opened_at DESC, id DESC LIMIT 1", (brand,), "reading the open incident")

    def open_incidents(self, brands: Sequence[str]) -> dict[str, dict[str, Any]]:
        found = {b: self.open_incident(b) for b in dict.fromkeys(brands)}
        return {b: inc for b, inc in found.items() if inc is not None}

    def list_incidents(self, brand: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if brand is not None:
            where.append("brand = ?")
            params.append(brand)
        if since is not None:
            where.append("opened_at >= ?")
            params.append(float(since))
        sql = "SELECT body FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._errors("listing incidents"):
            rows = self._conn().execute(sql + " ORDER BY opened_at DESC, id DESC", params).fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- exactly-once notifications -------------------------------------------------------------
    def claim(self, key: str, lease_seconds: float, now: float) -> bool:
        # One statement, so atomic: insert a claim, take a pending delivery, or take over a claim
        # whose lease has run out.  A final row (sent, failed, superseded, suppressed), or a claim
        # with a live lease, makes the upsert a no-op (rowcount 0).
        with self._errors("claiming a notification"):
            cur = self._conn().execute(
                "INSERT INTO deliveries (key, status, claimed_at, lease_until) VALUES (?1, 'claimed', ?2, ?3) "
                "ON CONFLICT (key) DO UPDATE SET status = 'claimed', claimed_at = ?2, lease_until = ?3, receipt = NULL "
                "WHERE deliveries.status = 'pending' OR (deliveries.status = 'claimed' AND deliveries.lease_until <= ?2)",
                (key, float(now), float(now) + float(lease_seconds)))
        return cur.rowcount == 1

    def mark_sent(self, key: str, receipt: dict[str, Any] | None) -> None:
        with self._errors("marking a notification sent"):
            self._conn().execute(
                "INSERT INTO deliveries (key, status, receipt) VALUES (?1, 'sent', ?2) "
                "ON CONFLICT (key) DO UPDATE SET status = 'sent', receipt = ?2",
                (key, _dumps(receipt)))

    def claim_many(self, keys: Sequence[str], lease_seconds: float, now: float) -> list[bool]:
        return [self.claim(k, lease_seconds, now) for k in keys]

    def release(self, key: str) -> None:
        self.release_many([key])

    def release_many(self, keys: Sequence[str]) -> None:
        with self._errors("releasing a claim"):
            self._conn().executemany("DELETE FROM deliveries WHERE key = ? AND status = 'claimed'",
                                     [(k,) for k in keys])

    def delivery(self, key: str) -> dict[str, Any] | None:
        with self._errors("reading a delivery"):
            row = self._conn().execute(
                "SELECT status, receipt, claimed_at, lease_until FROM deliveries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"status": row[0], "receipt": None if row[1] is None else json.loads(row[1]),
                "claimed_at": row[2], "lease_until": row[3]}

    # -- heartbeats -----------------------------------------------------------------------------
    def heartbeat(self, name: str, at: float) -> None:
        with self._errors("recording a heartbeat"):
            self._conn().execute("INSERT INTO heartbeats VALUES (?, ?) "
                                 "ON CONFLICT (name) DO UPDATE SET at = max(at, excluded.at)", (name, float(at)))

    def heartbeats(self, prefix: str = "") -> dict[str, float]:
        with self._errors("reading heartbeats"):
            rows = self._conn().execute(
                "SELECT name, at FROM heartbeats WHERE name >= ? ORDER BY name", (prefix,)).fetchall()
        return {name: at for name, at in rows if name.startswith(prefix)}
    # -- the delivery log -------------------------------------------------------------------------
    @staticmethod
    def _delivery_row(d: Delivery) -> tuple[Any, ...]:
        return (d.key, d.status, d.claimed_at, d.lease_until, None if d.receipt is None else _dumps(d.receipt),
                d.incident, d.created_at, _dumps(d.to_dict()))

    def add_pending(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self._errors("recording pending deliveries"):
            self._conn().executemany(
                "INSERT OR IGNORE INTO deliveries (key, status, claimed_at, lease_until, receipt, incident, created_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [self._delivery_row(d) for d in deliveries])

    def record_delivery(self, delivery: Delivery) -> None:
        with self._errors("recording a delivery"):
            self._conn().execute(
                "INSERT INTO deliveries (key, status, claimed_at, lease_until, receipt, incident, created_at, body) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (key) DO UPDATE SET status = ?2, claimed_at = ?3, "
                "lease_until = ?4, receipt = ?5, incident = ?6, created_at = ?7, body = ?8",
                self._delivery_row(delivery))

    @staticmethod
    def _delivery_of(row: tuple[Any, ...]) -> Delivery:
        status, claimed_at, lease_until, body = row
        d = Delivery.from_dict(json.loads(body))
        # the claim columns are the truth about status and lease (a claim does not rewrite the body)
        d.status, d.claimed_at, d.lease_until = status, claimed_at, lease_until
        return d

    def get_delivery(self, key: str) -> Delivery | None:
        with self._errors("reading a delivery"):
            row = self._conn().execute(
                "SELECT status, claimed_at, lease_until, body FROM deliveries WHERE key = ? AND body IS NOT NULL",
                (key,)).fetchone()
        return None if row is None else self._delivery_of(row)

    def list_deliveries(self, incident: str | None = None) -> list[Delivery]:
        sql = "SELECT status, claimed_at, lease_until, body FROM deliveries WHERE body IS NOT NULL"
        params: tuple[Any, ...] = ()
        if incident is not None:
            sql += " AND incident = ?"
            params = (incident,)
        with self._errors("listing deliveries"):
            rows = self._conn().execute(sql, params).fetchall()
        return sorted(map(self._delivery_of, rows), key=lambda d: (d.created_at or 0.0, d.incident, d.transition, d.channel))

    def ping(self) -> None:
        """Raise StoreError unless the file can be read (for health checks and start-up)."""
        with self._errors("pinging"):
            self._conn().execute("SELECT count(*) FROM state").fetchone()

    def close(self) -> None:
        pid = os.getpid()
        with self._lock:
            mine = [c for p, c in self._conns if p == pid]
            self._conns = [(p, c) for p, c in self._conns if p != pid]
        for conn in mine:
            conn.close()
        self._local = threading.local()
