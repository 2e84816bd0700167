-- The hash chain over the event log (see ledger/chain.py): one link per event, written in
-- the event's own transaction, and the chain head.
CREATE TABLE IF NOT EXISTS event_chain (
    position INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_chain_stream_idx ON event_chain (stream_id, version);
CREATE TABLE IF NOT EXISTS event_chain_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL,
    hash TEXT NOT NULL
);
