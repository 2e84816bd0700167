-- Idempotency-Key replies, stored durably: the same key and body replays the first reply.
-- A row with a NULL status is a request still in progress.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    principal TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER,
    headers TEXT,
    body BLOB,
    created_at TEXT NOT NULL,
    PRIMARY KEY (principal, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);
