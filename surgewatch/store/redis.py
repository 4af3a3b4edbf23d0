"""RedisStore: the cluster-mode store.  Every worker and beat shares one Redis.

Key layout (``p`` is the prefix, default ``sw:``; the source name comes before the free-text brand
so no two (source, brand) pairs can spell the same key):

    p d:{source}:{partition}:{brand}  set of ids seen             -- dedup, see _INGEST_LUA
    p c:{source}:{day}:{brand}      hash bucket_start -> count   -- one hash per UTC day, EXPIRE retention
    p s:{brand}                     zset day -> "{day}:{source}" -- which count hashes exist
    p r:{brand}                     zset created_at -> mention   -- recent, trimmed to recent_cap
    p cursor / p state              hash name -> JSON
    p inc                           hash id -> incident JSON
    p inc:all, p inc:b:{brand}      zset opened_at -> id         -- newest-first listings
    p inc:open:{brand}              id of the brand's open incident
    p inc:v                         hash id -> version (compare-and-swap, see replace_incident)
    p dl:{key}                      hash status/claimed_at/lease_until/receipt[/body], EXPIRE retention
    p dl:index                      zset created_at -> delivery key  -- the delivery log, oldest first
    p dl:inc:{incident}             set of the incident's delivery keys, EXPIRE retention

A whole ingest batch is one EVALSHA: dedup, counts and recent in a single round trip, atomically,
so a retried batch (lost reply, redelivered task) is absorbed by the dedup keys and never counts
twice.  The scripts build key names from ARGV instead of declaring KEYS: fine on a standalone
server or Sentinel, not on Redis Cluster (which would need every key of a batch in one slot).
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from surgewatch.collectors.base import Mention

from .base import Delivery, IngestResult
from .codec import decode_mention, encoder_for, fold_points
from .errors import StoreError, redact_url
from .resp import FragmentPacker, PackedArgs, bulk
from surgewatch.incidents.model import Incident

DAY = 86400

# Dedup is per (source, brand, id): one post that names two brands is a mention of each, while
# the same post fetched twice for one brand (overlapping polls, a redelivered task) counts once.
# It uses one set of ids per (source, brand) per time partition instead of one key per mention
# with its own expiry (SET NX PX): measured here, a SET NX PX per mention cost ~2.7 us inside the
# script, the largest single cost, while a few SMISMEMBER + one SADD over the whole batch cost
# about half that; and a set member takes about half the memory of a key with a TTL.  With K = 3
# partitions of dedup_ttl / 2 each, an id is remembered for at least dedup_ttl and at most
# 1.5 x dedup_ttl.  Partitions follow the Redis server's clock (TIME), so workers with skewed
# clocks still agree, and each partition expires (PEXPIREAT) the moment no ingest reads it.
#
# ARGV: ttl_ms, recent_cap, retention_s, bucket_seconds, prefix, n_groups, count (1/0), then per
#       (brand, source) group: brand, source, n, then n x (id, created_us, payload).
# created_us is integer epoch microseconds (exact in a Lua number up to year 2255).  Counts are
# summed in a Lua table first, so a group's 500 mentions in one minute are one HINCRBY.
_INGEST_LUA = r"""
local K, A, fmod = 3, ARGV, math.fmod
local ttl, cap, keep = tonumber(A[1]), tonumber(A[2]), A[3]
local bs, p, ng, counting = tonumber(A[4]) * 1000000, A[5], tonumber(A[6]), A[7] == '1'
local part = math.max(1, math.ceil(ttl / (K - 1)))
local t = redis.call('TIME')
local q = math.floor((t[1] * 1000 + math.floor(t[2] / 1000)) / part)
local trimmed, new, i = {}, 0, 8
for _ = 1, ng do
  local brand, source, n = A[i], A[i + 1], tonumber(A[i + 2])
  i = i + 3
  local ids = {}
  for j = 1, n do ids[j] = A[i + 3 * (j - 1)] end
  -- which ids a live partition already holds (unpack in chunks: Lua's C stack is limited)
  local seen, dkey = {}, p .. 'd:' .. source .. ':'
  for k = q - K + 1, q do
    local key = dkey .. string.format('%d', k) .. ':' .. brand
    for c = 1, n, 1000 do
      local r = redis.call('SMISMEMBER', key, unpack(ids, c, math.min(c + 999, n)))
      for j = 1, #r do
        if r[j] == 1 then seen[ids[c + j - 1]] = true end
      end
    end
  end
  local fresh, nf, counts, rg, m = {}, 0, {}, {}, 0
  for _ = 1, n do
    local id = A[i]
    if not seen[id] then
      seen[id] = true  -- a repeat later in the same batch is a duplicate too
      nf = nf + 1
      fresh[nf] = id
      -- floor to the bucket, exactly: integers below 2^53, and fmod is exact
      local u = A[i + 1]
      local us = tonumber(u)
      local r = fmod(us, bs)
      if r < 0 then r = r + bs end
      local b = (us - r) / 1000000
      counts[b] = (counts[b] or 0) + 1
      rg[m + 1] = u
      rg[m + 2] = A[i + 2]
      m = m + 2
    end
    i = i + 3
  end
  if nf > 0 then
    local key = dkey .. string.format('%d', q) .. ':' .. brand
    for c = 1, nf, 1000 do
      redis.call('SADD', key, unpack(fresh, c, math.min(c + 999, nf)))
    end
    -- gone exactly when no ingest would look at it any more
    redis.call('PEXPIREAT', key, string.format('%d', (q + K) * part))
    new = new + nf
    local days = {}
    if not counting then counts = {} end  -- a sample (X's posts): its source reports the counts
    for b, c in pairs(counts) do
      local day = string.format('%d', math.floor(b / 86400))
      local ckey = p .. 'c:' .. source .. ':' .. day .. ':' .. brand
      redis.call('HINCRBY', ckey, string.format('%d', b), c)
      days[day] = ckey
    end
    local skey = p .. 's:' .. brand
    for day, ckey in pairs(days) do
      redis.call('EXPIRE', ckey, keep)
      redis.call('ZADD', skey, day, day .. ':' .. source)
    end
    redis.call('EXPIRE', skey, keep)
    local rkey = p .. 'r:' .. brand
    for j = 1, m, 1000 do
      redis.call('ZADD', rkey, unpack(rg, j, math.min(j + 999, m)))
    end
    trimmed[rkey] = true
  end
end
for rkey in pairs(trimmed) do
  redis.call('ZREMRANGEBYRANK', rkey, 0, -cap - 1)
  redis.call('EXPIRE', rkey, keep)
end
return new
"""

# ARGV: now, lease_until, keep, then keys; one 0/1 per key.  First caller wins: nothing there, a
# pending delivery, or a claim whose lease ran out can be taken; a live lease or any final status
# (sent, failed, superseded, suppressed) refuses.  Many keys in one call: an evaluate tick locks a
# whole chunk of brands at once.
_CLAIM_LUA = r"""
local now, lease_until, keep = ARGV[1], ARGV[2], ARGV[3]
local won = {}
for i = 4, #ARGV do
  local st = redis.call('HMGET', ARGV[i], 'status', 'lease_until')
  local s = st[1]
  if s and s ~= 'pending' and not (s == 'claimed' and tonumber(st[2]) <= tonumber(now)) then
    won[#won + 1] = 0
  else
    redis.call('HSET', ARGV[i], 'status', 'claimed', 'claimed_at', now, 'lease_until', lease_until)
    redis.call('EXPIRE', ARGV[i], keep)
    won[#won + 1] = 1
  end
end
return won
"""

# ARGV: keep, prefix, then per delivery: hash key, delivery key, incident, created_at, status, body.
# Records a delivery only where no record exists (a re-listed outbox entry must not reset one that
# has moved on), and indexes it.
_ADD_PENDING_LUA = r"""
local keep, p = ARGV[1], ARGV[2]
for i = 3, #ARGV, 6 do
  local k, key, inc = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, 'status', ARGV[i + 4], 'body', ARGV[i + 5])
    redis.call('EXPIRE', k, keep)
  end
  redis.call('ZADD', p .. 'dl:index', 'NX', ARGV[i + 3], key)
  redis.call('SADD', p .. 'dl:inc:' .. inc, key)
  redis.call('EXPIRE', p .. 'dl:inc:' .. inc, keep)
end
return 0
"""

# ARGV: keys.  Only an unsent claim can be given back.
_RELEASE_LUA = r"""
for i = 1, #ARGV do
  if redis.call('HGET', ARGV[i], 'status') == 'claimed' then redis.call('DEL', ARGV[i]) end
end
return 0
"""

# ARGV: prefix, id, brand, status, opened_at, json, expected version ('' = any), new version.
# Keeps the open pointer consistent with the incident in one step, so a reader never sees a
# resolved incident as the brand's open one; with an expected version, writes only if the stored
# version (0 when none) is that one -- a compare-and-swap, so two writers never lose an update.
_SAVE_INCIDENT_LUA = r"""
local p, id, brand = ARGV[1], ARGV[2], ARGV[3]
if ARGV[7] ~= '' then
  local current = tonumber(redis.call('HGET', p .. 'inc:v', id) or '0')
  if current ~= tonumber(ARGV[7]) then return 0 end
end
redis.call('HSET', p .. 'inc', id, ARGV[6])
redis.call('HSET', p .. 'inc:v', id, ARGV[8])
redis.call('ZADD', p .. 'inc:all', ARGV[5], id)
redis.call('ZADD', p .. 'inc:b:' .. brand, ARGV[5], id)
local open = p .. 'inc:open:' .. brand
if ARGV[4] == 'open' then
  redis.call('SET', open, id)
elseif redis.call('GET', open) == id then
  redis.call('DEL', open)
end
return 1
"""


# A heartbeat never moves back (two workers racing keep the later time).
_HEARTBEAT_LUA = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current or tonumber(current) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


SHORT_WINDOW_BUCKETS = 240  # windows up to this many buckets are read field by field (HMGET)

class RedisStore:
    """The Store protocol on Redis (see the module docstring for the key layout)."""

    def __init__(
        self,
        url: str,
        bucket_seconds: int = 60,
        dedup_ttl: float = 7 * 86400,
        recent_cap: int = 500,
        retention_seconds: int = 35 * 86400,
        prefix: str = "sw:",
        *,
        socket_timeout: float = 10.0,
    ):
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        self.bucket_seconds = int(bucket_seconds)
        self.dedup_ttl = float(dedup_ttl)
        self.recent_cap = int(recent_cap)
        self.retention_seconds = int(retention_seconds)
        self.prefix = prefix
        self.safe_url = redact_url(url)
        # A restarted Redis comes back within seconds: retry a dropped connection a few times
        # with jittered backoff before surfacing a StoreError.  Every script is safe to re-run
        # (dedup keys absorb a replayed ingest; a replayed claim can only refuse, never double).
        try:
            self._redis = redis.Redis.from_url(
                url,
                socket_connect_timeout=5.0,
                socket_timeout=socket_timeout,
                health_check_interval=30,
                retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=2.0), retries=4),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                command_packer=FragmentPacker(),
            )
        except ValueError as exc:  # redis-py's message does not include the password
            raise StoreError(f"invalid Redis URL {self.safe_url}: {exc}", permanent=True) from None
        self._ingest = self._redis.register_script(_INGEST_LUA)
        self._claim = self._redis.register_script(_CLAIM_LUA)
        self._release = self._redis.register_script(_RELEASE_LUA)
        self._save_incident = self._redis.register_script(_SAVE_INCIDENT_LUA)
        self._heartbeat = self._redis.register_script(_HEARTBEAT_LUA)
        self._add_pending = self._redis.register_script(_ADD_PENDING_LUA)
        self._ttl_ms = max(1, int(self.dedup_ttl * 1000))

    def __repr__(self) -> str:
        return f"RedisStore({self.safe_url!r}, prefix={self.prefix!r})"

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except redis.AuthenticationError as exc:
            raise StoreError(f"Redis at {self.safe_url} refused our credentials while {doing}: {exc}",
                             permanent=True) from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreError(f"Redis at {self.safe_url} is unreachable while {doing}: {exc}") from None
        except redis.ResponseError as exc:
            raise StoreError(f"Redis at {self.safe_url} answered an error while {doing}: {exc}") from None

    # -- mentions -------------------------------------------------------------------------------
    def ingest(self, mentions: Sequence[Mention], *, count: bool = True) -> IngestResult:
        if not mentions:
            return IngestResult(0, 0)
        # (brand, source) -> its run of arguments and its payload encoder
        groups: dict[tuple[str, str], tuple[list[str], Callable[[Mention, str], str]]] = {}
        brand = source = None
        # The hot loop, about 2.5 us a mention: each mention becomes its three script arguments
        # (id, created_at in microseconds, payload) already in wire format (see resp.py).  The
        # payload is pure ASCII, so only the id (outside text) may need its bytes counted.
        for m in mentions:
            if m.brand != brand or m.source != source:  # batches usually hold one group
                brand, source = m.brand, m.source
                entry = groups.get((brand, source))
                if entry is None:
                    entry = groups[(brand, source)] = ([], encoder_for(source, brand))
                parts, encode = entry
            us = str(round(m.created_at.timestamp() * 1_000_000))  # codec.micros, inlined
            p = encode(m, us)
            i = m.id
            parts.append(f"${len(i) if i.isascii() else len(i.encode('utf-8', 'surrogatepass'))}\r\n{i}\r\n"
                         f"${len(us)}\r\n{us}\r\n${len(p)}\r\n{p}\r\n")
        chunks: list[str] = []
        for (brand, source), (parts, _) in groups.items():
            chunks.append(bulk(brand) + bulk(source) + bulk(str(len(parts))))
            chunks += parts
        packed = PackedArgs(3 * len(groups) + 3 * len(mentions), "".join(chunks).encode("utf-8", "surrogatepass"))
        head = (self._ttl_ms, self.recent_cap, self.retention_seconds, self.bucket_seconds, self.prefix,
                len(groups), 1 if count else 0)
        with self._errors("ingesting mentions"):
            new = self._ingest(args=(*head, packed))
        return IngestResult(new=int(new), duplicates=len(mentions) - int(new))

    def set_volume(self, brand: str, source: str, points: Sequence[tuple[float, int]]) -> None:
        per_bucket = fold_points(points, self.bucket_seconds)  # then SET, so a re-poll is idempotent
        if not per_bucket:
            return
        p = self.prefix
        with self._errors("saving volume"), self._redis.pipeline(transaction=True) as pipe:
            days = set()
            for b, n in per_bucket.items():
                key = f"{p}c:{source}:{b // DAY}:{brand}"
                if n:
                    pipe.hset(key, str(b), n)
                else:
                    pipe.hdel(key, str(b))
                days.add(b // DAY)
            for day in days:
                pipe.expire(f"{p}c:{source}:{day}:{brand}", self.retention_seconds)
                pipe.zadd(f"{p}s:{brand}", {f"{day}:{source}": day})
            pipe.expire(f"{p}s:{brand}", self.retention_seconds)
            pipe.execute()

    def counts(self, brand: str, start: float, end: float) -> dict[str, dict[float, int]]:
        return self.counts_many({brand: (start, end)}).get(brand, {})

    def counts_many(self, windows: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, dict[float, int]]]:
        # Two round trips for any number of brands: which day hashes exist, then their fields.
        p, bs = self.prefix, self.bucket_seconds
        windows = {b: w for b, w in windows.items() if w[1] > w[0]}
        if not windows:
            return {}
        reads: list[tuple[str, str, list[str] | None]] = []  # (brand, source, fields or None for all)
        with self._errors("reading counts"):
            with self._redis.pipeline(transaction=False) as pipe:
                for b, (start, end) in windows.items():
                    pipe.zrangebyscore(f"{p}s:{b}", math.floor(start) // DAY, math.floor(end) // DAY)
                members = pipe.execute()
            with self._redis.pipeline(transaction=False) as pipe:
                for (b, (start, end)), days in zip(windows.items(), members):
                    wanted = range(int(math.ceil(start / bs) * bs), math.ceil(end), bs)
                    # A short window (the usual evaluate tick: a bucket or a few) reads just its
                    # fields; reading whole day hashes (1,440 fields per source) made a
                    # 1,000-brand tick take seconds.
                    short = len(wanted) <= SHORT_WINDOW_BUCKETS
                    for member in days:
                        day, source = member.decode().split(":", 1)
                        key = f"{p}c:{source}:{day}:{b}"
                        if short:
                            fields = [str(x) for x in wanted if x // DAY == int(day)]
                            if fields:
                                pipe.hmget(key, fields)
                                reads.append((b, source, fields))
                        else:
                            pipe.hgetall(key)
                            reads.append((b, source, None))
                replies = pipe.execute() if reads else []
        out: dict[str, dict[str, dict[float, int]]] = {}
        for (b, source, fields), reply in zip(reads, replies):
            start, end = windows[b]
            series = out.setdefault(b, {}).setdefault(source, {})
            for field, n in (zip(fields, reply) if fields is not None else reply.items()):
                if n is None:
                    continue
                t = float(field)
                if start <= t < end and int(n):
                    series[t] = int(n)
        return {b: {source: dict(sorted(series.items())) for source, series in sorted(per.items()) if series}
                for b, per in out.items()}

    def recent(self, brand: str, limit: int = 50) -> list[Mention]:
        limit = min(limit, self.recent_cap)
        if limit <= 0:
            return []
        with self._errors("reading recent mentions"):
            payloads = self._redis.zrevrange(f"{self.prefix}r:{brand}", 0, limit - 1)
        return [decode_mention(x) for x in payloads]

    # -- cursors and state ----------------------------------------------------------------------
    def get_cursor(self, source: str, brand: str) -> dict[str, Any] | None:
        with self._errors("reading a cursor"):
            raw = self._redis.hget(f"{self.prefix}cursor", _dumps([source, brand]))
        return None if raw is None else json.loads(raw)

    def set_cursor(self, source: str, brand: str, cursor: dict[str, Any]) -> None:
        with self._errors("saving a cursor"):
            self._redis.hset(f"{self.prefix}cursor", _dumps([source, brand]), _dumps(cursor))

    def get_state(self, name: str) -> dict[str, Any] | None:
        return self.get_states([name])[0]

    def get_states(self, names: Sequence[str]) -> list[dict[str, Any] | None]:
        if not names:
            return []
        with self._errors("reading state"):
            raws = self._redis.hmget(f"{self.prefix}state", list(names))
        return [None if raw is None else json.loads(raw) for raw in raws]

    def set_state(self, name: str, value: dict[str, Any]) -> None:
        self.set_states({name: value})

    def set_states(self, values: Mapping[str, dict[str, Any]]) -> None:
        if not values:
            return
        with self._errors("saving state"):
            self._redis.hset(f"{self.prefix}state", mapping={k: _dumps(v) for k, v in values.items()})

    def list_state(self, prefix: str) -> dict[str, dict[str, Any]]:
        # HSCAN's MATCH is a glob: escape the caller's prefix so "a*" means the literal "a*"
        pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"
        with self._errors("listing state"):
            items = self._redis.hscan_iter(f"{self.prefix}state", match=pattern, count=1000)
            return {k.decode(): json.loads(v) for k, v in items}

    # -- incidents ------------------------------------------------------------------------------
    def save_incident(self, incident: Incident) -> None:
        self._write_incident(incident, None)

    def replace_incident(self, incident: Incident, expected_version: int) -> bool:
        return self._write_incident(incident, int(expected_version))

    def _write_incident(self, incident: Incident, expected: int | None) -> bool:
        missing = [k for k in ("id", "brand", "status", "opened_at") if k not in incident]
        if missing:
            raise ValueError(f"incident lacks {', '.join(missing)}")
        if expected is not None:
            incident = {**incident, "version": expected + 1}
        with self._errors("saving an incident"):
            done = self._save_incident(args=[self.prefix, str(incident["id"]), incident["brand"], incident["status"],
                                             float(incident["opened_at"]), _dumps(incident),
                                             "" if expected is None else expected, int(incident.get("version") or 0)])
        return bool(done)

    def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        with self._errors("reading an incident"):
            raw = self._redis.hget(f"{self.prefix}inc", incident_id)
        return None if raw is None else json.loads(raw)

    def open_incident(self, brand: str) -> dict[str, Any] | None:
        return self.open_incidents([brand]).get(brand)

    def open_incidents(self, brands: Sequence[str]) -> dict[str, dict[str, Any]]:
        brands = list(dict.fromkeys(brands))
        if not brands:
            return {}
        p = self.prefix
        with self._errors("reading open incidents"):
            ids = self._redis.mget([f"{p}inc:open:{b}" for b in brands])
            pointed = [(b, i) for b, i in zip(brands, ids) if i is not None]
            if not pointed:
                return {}
            raws = self._redis.hmget(f"{p}inc", [i for _, i in pointed])
        out: dict[str, dict[str, Any]] = {}
        for (b, _), raw in zip(pointed, raws):
            incident = None if raw is None else json.loads(raw)
            # the pointer and the incident change together (one script), but check anyway
            if incident and incident.get("status") == "open":
                out[b] = incident
        return out

    def list_incidents(self, brand: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        index = f"{self.prefix}inc:all" if brand is None else f"{self.prefix}inc:b:{brand}"
        low = "-inf" if since is None else float(since)
        with self._errors("listing incidents"):
            ids = self._redis.zrevrangebyscore(index, "+inf", low)
            if not ids:
                return []
            raws = self._redis.hmget(f"{self.prefix}inc", ids)
        return [json.loads(r) for r in raws if r is not None]

    # -- exactly-once notifications -------------------------------------------------------------
    def _delivery_key(self, key: str) -> str:
        return f"{self.prefix}dl:{key}"

    def claim(self, key: str, lease_seconds: float, now: float) -> bool:
        return self.claim_many([key], lease_seconds, now)[0]

    def claim_many(self, keys: Sequence[str], lease_seconds: float, now: float) -> list[bool]:
        if not keys:
            return []
        with self._errors("claiming"):
            won = self._claim(args=[repr(float(now)), repr(float(now) + float(lease_seconds)),
                                    self.retention_seconds, *(self._delivery_key(k) for k in keys)])
        return [bool(w) for w in won]

    def mark_sent(self, key: str, receipt: dict[str, Any] | None) -> None:
        k = self._delivery_key(key)
        with self._errors("marking a notification sent"), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(k, mapping={"status": "sent", "receipt": _dumps(receipt)})
            pipe.expire(k, self.retention_seconds)
            pipe.execute()

    def release(self, key: str) -> None:
        self.release_many([key])

    def release_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        with self._errors("releasing a claim"):
            self._release(args=[self._delivery_key(k) for k in keys])

    def delivery(self, key: str) -> dict[str, Any] | None:
        with self._errors("reading a delivery"):
            h = self._redis.hgetall(self._delivery_key(key))
        if not h:
            return None
        claimed_at = h.get(b"claimed_at")
        lease_until = h.get(b"lease_until")
        receipt = h.get(b"receipt")
        return {
            "status": h[b"status"].decode(),
            "receipt": None if receipt is None else json.loads(receipt),
            "claimed_at": None if claimed_at is None else float(claimed_at),
            "lease_until": None if lease_until is None else float(lease_until),
        }

    # -- the delivery log -------------------------------------------------------------------------
    def add_pending(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        args: list[Any] = [self.retention_seconds, self.prefix]
        for d in deliveries:
            args += [self._delivery_key(d.key), d.key, d.incident, repr(float(d.created_at or 0.0)), d.status,
                     _dumps(d.to_dict())]
        with self._errors("recording pending deliveries"):
            self._add_pending(args=args)

    def record_delivery(self, delivery: Delivery) -> None:
        d, k, p = delivery, self._delivery_key(delivery.key), self.prefix
        fields = {"status": d.status, "body": _dumps(d.to_dict())}
        gone = []
        for name, value in (("claimed_at", d.claimed_at), ("lease_until", d.lease_until), ("receipt", d.receipt)):
            if value is None:
                gone.append(name)
            else:
                fields[name] = _dumps(value) if name == "receipt" else repr(float(value))
        with self._errors("recording a delivery"), self._redis.pipeline(transaction=True) as pipe:
            if gone:
                pipe.hdel(k, *gone)
            pipe.hset(k, mapping=fields)
            pipe.expire(k, self.retention_seconds)
            pipe.zadd(f"{p}dl:index", {d.key: float(d.created_at or 0.0)}, nx=True)
            # the records themselves expire; keep their index no longer
            pipe.zremrangebyscore(f"{p}dl:index", "-inf", float(d.created_at or 0.0) - self.retention_seconds)
            pipe.sadd(f"{p}dl:inc:{d.incident}", d.key)
            pipe.expire(f"{p}dl:inc:{d.incident}", self.retention_seconds)
            pipe.execute()

    @staticmethod
    def _delivery_of(values: Sequence[bytes | None]) -> Delivery | None:
        status, claimed_at, lease_until, body = values
        if body is None or status is None:
            return None  # a plain claim (a lock, a reminder), or gone
        d = Delivery.from_dict(json.loads(body))
        d.status = status.decode()
        d.claimed_at = None if claimed_at is None else float(claimed_at)
        d.lease_until = None if lease_until is None else float(lease_until)
        return d

    _DELIVERY_FIELDS = ("status", "claimed_at", "lease_until", "body")

    def get_delivery(self, key: str) -> Delivery | None:
        with self._errors("reading a delivery"):
            values = self._redis.hmget(self._delivery_key(key), self._DELIVERY_FIELDS)
        return self._delivery_of(values)

    def list_deliveries(self, incident: str | None = None) -> list[Delivery]:
        p = self.prefix
        with self._errors("listing deliveries"):
            if incident is None:
                keys = [k.decode() for k in self._redis.zrange(f"{p}dl:index", 0, -1)]
            else:
                keys = sorted(k.decode() for k in self._redis.smembers(f"{p}dl:inc:{incident}"))
            with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(self._delivery_key(key), self._DELIVERY_FIELDS)
                rows = pipe.execute() if keys else []
        found = [d for d in map(self._delivery_of, rows) if d is not None]
        return sorted(found, key=lambda d: (d.created_at or 0.0, d.incident, d.transition, d.channel))

    # -- housekeeping ---------------------------------------------------------------------------
    # -- heartbeats -----------------------------------------------------------------------------
    def heartbeat(self, name: str, at: float) -> None:
        with self._errors("recording a heartbeat"):
            self._heartbeat(keys=[f"{self.prefix}heartbeat"], args=[name, repr(float(at))])

    def heartbeats(self, prefix: str = "") -> dict[str, float]:
        pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"
        with self._errors("reading heartbeats"):
            items = self._redis.hscan_iter(f"{self.prefix}heartbeat", match=pattern, count=1000)
            return {k.decode(): float(v) for k, v in items}

    def ping(self) -> None:
        """Raise StoreError unless the server answers (for health checks and start-up)."""
        with self._errors("pinging"):
            self._redis.ping()

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()
