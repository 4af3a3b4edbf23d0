"""The plain code behind the Celery tasks, one module per stage:

* :mod:`.runtime`    -- the per-process container (settings, store, collectors, channels).
* :mod:`.collection` -- poll one source for one brand; ingest (dedup by source, brand and id); only then
    save the cursor.
* :mod:`.evaluation` -- score every completed bucket with the pure detector; move the brand's incident;
    list the transitions still to be dispatched (an outbox: re-listed until marked).
* :mod:`.routing`    -- which channels hear about a transition; escalation and repeat policies.
* :mod:`.delivery`   -- claim (incident, transition, channel) in the store, send, record.

Each function does one unit of work idempotently, so a redelivered task is harmless.
"""
from surgewatch.pipeline.collection import FUTURE_TOLERANCE, MAX_MENTION_AGE, CollectOutcome, admit, collect, source_outage_alert
from surgewatch.pipeline.delivery import (
    MAX_SEND_ATTEMPTS,
    NotifyOutcome,
    RetryLater,
    backoff,
    build_notification,
    fail_delivery,
    give_up,
    notify,
)
from surgewatch.store.keys import delivery_key, receipt_key
from surgewatch.pipeline.evaluation import (
    MAX_TICK_BUCKETS,
    EvaluateOutcome,
    evaluate,
    evaluate_many,
    evaluate_until_current,
    mark_dispatched,
)
from surgewatch.pipeline.ops_messages import ops_poster, send_reminders
from surgewatch.pipeline.routing import CHAT_CHANNELS, escalate, repeat, routes
from surgewatch.pipeline.runtime import NOTIFY_LEASE, NotReady, Runtime

__all__ = [
    "CHAT_CHANNELS", "FUTURE_TOLERANCE", "MAX_SEND_ATTEMPTS", "RetryLater", "backoff", "fail_delivery", "give_up", "MAX_MENTION_AGE", "MAX_TICK_BUCKETS", "NOTIFY_LEASE",
    "CollectOutcome", "EvaluateOutcome", "NotReady", "NotifyOutcome", "Runtime",
    "admit", "build_notification", "collect", "delivery_key", "escalate", "evaluate", "evaluate_many",
    "evaluate_until_current", "mark_dispatched", "notify", "ops_poster", "receipt_key", "repeat", "routes",
    "send_reminders", "source_outage_alert",
]
