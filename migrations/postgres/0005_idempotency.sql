-- Idempotency-Key replies, stored durably: the same key and body replays the first reply.
-- A row with a NULL status is a request still in progress.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    principal text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash text NOT NULL,
    status integer,
    headers text,
    body bytea,
    created_at text NOT NULL,
    PRIMARY KEY (principal, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);
