"""The relay's SQL. A lane is the unit of order (a row's channel, or its partition when it has
one); a relay claims whole lanes with transaction-scoped advisory locks, then their rows.

Why the lock comes before the rows: ``FOR UPDATE SKIP LOCKED`` alone lets a second relay skip the
rows a first one holds and take the next rows of the same channel, which it may then publish
first. With the lane's advisory lock taken first, only one relay reads a lane at a time, and it
reads that lane's rows oldest first; SKIP LOCKED then only keeps relays from queueing behind each
other's row locks. Locks end with the transaction, so a relay that dies frees its lanes at once.
"""

from __future__ import annotations

# pg_try_advisory_xact_lock(key1, key2): key1 names our lock space, key2 is the lane's hash.
# Two lanes with the same hash share a lock: a little less parallelism, never a reordering.
LOCK_SPACE = 0x5B0A  # "switchboard outbox"

NOTIFY_CHANNEL = "switchboard_outbox"

# Lanes no other relay holds, taken from the oldest pending rows, oldest lane first: a bounded scan
# of the primary key's index, never the whole table. At most half the lanes seen (at least one),
# so that with several relays each finds lanes of its own. The lock function is volatile, so it
# is applied after the sort, lane by lane, and LIMIT stops trying once enough are held (locking
# one more than asked would cost parallelism, never order).
LOCK_LANES = """
WITH lanes AS (
    SELECT lane, min(id) AS head FROM (SELECT lane, id FROM switchboard_outbox ORDER BY id LIMIT %(scan)s) oldest
    GROUP BY lane
)
SELECT lane FROM (SELECT lane FROM lanes ORDER BY head) candidates
WHERE pg_try_advisory_xact_lock(%(space)s, hashtext(lane))
LIMIT (SELECT greatest(1, (count(*) + 1) / 2) FROM lanes)
"""

CLAIM_ROWS = """
SELECT id, channel, data, idempotency_key, lane, (extract(epoch FROM created_at) * 1000000)::bigint
FROM switchboard_outbox
WHERE lane = ANY(%(lanes)s::text[]) ORDER BY id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

DELETE_DELIVERED = "DELETE FROM switchboard_outbox WHERE id = ANY(%(ids)s::bigint[])"

MOVE_DEAD = """
WITH why AS (SELECT * FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS w(id, reason)),
moved AS (DELETE FROM switchboard_outbox o USING why WHERE o.id = why.id
          RETURNING o.id, o.channel, o.data, o.idempotency_key, o.partition, o.created_at)
INSERT INTO switchboard_outbox_dead (id, channel, data, idempotency_key, partition, created_at, reason)
SELECT moved.id, channel, data, idempotency_key, partition, created_at, why.reason FROM moved JOIN why USING (id)
ON CONFLICT (id) DO NOTHING
"""

# The lag: rows waiting and the oldest one's age (the lowest id's, by the primary key's index),
# for the gauges. Sampled every few seconds, not per batch: count(*) reads the whole table.
BACKLOG = """
SELECT (SELECT count(*) FROM switchboard_outbox),
       coalesce((SELECT extract(epoch FROM clock_timestamp() - created_at) FROM switchboard_outbox
                 ORDER BY id LIMIT 1), 0)::float8
"""
