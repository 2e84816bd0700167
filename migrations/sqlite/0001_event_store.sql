-- The eventsourcing library's application recorder (notification ids are the rowid) and
-- its snapshot store, created here so that migrations alone own the schema.
CREATE TABLE IF NOT EXISTS stored_events (
    originator_id TEXT,
    originator_version INTEGER,
    topic TEXT,
    state BLOB,
    PRIMARY KEY (originator_id, originator_version)
);
CREATE TABLE IF NOT EXISTS stored_snapshots (
    originator_id TEXT,
    originator_version INTEGER,
    topic TEXT,
    state BLOB,
    PRIMARY KEY (originator_id, originator_version)
) WITHOUT ROWID;
