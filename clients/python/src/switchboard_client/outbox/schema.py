"""The outbox table's DDL: the same text as ``deploy/outbox/0001_switchboard_outbox.sql``.

Run it once per database (``psql -f``, or ``op.execute(DDL)`` in an Alembic migration). It is
idempotent: every statement is ``IF NOT EXISTS`` or ``OR REPLACE``.
"""

DDL = """\
-- Switchboard's transactional outbox (docs/outbox.md). Rows are written in the caller's
-- transaction; a Switchboard relay publishes each one once, in id order per lane, then deletes it.
CREATE TABLE IF NOT EXISTS switchboard_outbox (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    data jsonb NOT NULL,
    idempotency_key text,
    -- Rows of one lane are delivered in id order; lanes are relayed in parallel. Without a
    -- partition a row's lane is its channel; rows that share a partition share one lane.
    partition integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    lane text GENERATED ALWAYS AS (
        CASE WHEN partition IS NULL THEN 'c:' || channel ELSE 'p:' || partition::text END
    ) STORED
);
CREATE INDEX IF NOT EXISTS switchboard_outbox_lane ON switchboard_outbox (lane, id);

-- Rows that can never be published (an unknown channel, data over the size limit), with why.
CREATE TABLE IF NOT EXISTS switchboard_outbox_dead (
    id bigint PRIMARY KEY,
    channel text NOT NULL,
    data jsonb NOT NULL,
    idempotency_key text,
    partition integer,
    created_at timestamptz NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    reason text NOT NULL
);

-- Wakes the relays at commit (one notification per transaction and channel name, however many rows).
CREATE OR REPLACE FUNCTION switchboard_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchboard_outbox', '');
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS switchboard_outbox_notify ON switchboard_outbox;
CREATE TRIGGER switchboard_outbox_notify AFTER INSERT ON switchboard_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION switchboard_outbox_notify();
"""
