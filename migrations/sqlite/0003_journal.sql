-- The double-entry journal. Amounts are integer minor units, so sums are exact.
-- Lines are written first, then their entry header; the header's trigger refuses an entry
-- whose lines do not balance per currency (SQLite has no deferred constraint triggers),
-- and every report reads lines through their header.
CREATE TABLE IF NOT EXISTS journal_lines (
    entry_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    account TEXT NOT NULL,
    currency TEXT NOT NULL,
    debit_minor INTEGER NOT NULL CHECK (debit_minor >= 0),
    credit_minor INTEGER NOT NULL CHECK (credit_minor >= 0),
    PRIMARY KEY (entry_id, line_no)
);
CREATE INDEX IF NOT EXISTS journal_lines_account_idx ON journal_lines (account, entry_id);
CREATE TABLE IF NOT EXISTS journal_entries (
    entry_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    booked_at TEXT NOT NULL,
    event_type TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_entries_booked_idx ON journal_entries (booked_at);
CREATE TRIGGER IF NOT EXISTS journal_entry_must_balance
BEFORE INSERT ON journal_entries
BEGIN
    SELECT RAISE(ABORT, 'journal entry does not balance')
    WHERE NOT EXISTS (SELECT 1 FROM journal_lines WHERE entry_id = NEW.entry_id)
       OR EXISTS (
        SELECT 1 FROM journal_lines
        WHERE entry_id = NEW.entry_id
        GROUP BY currency
        HAVING SUM(debit_minor) <> SUM(credit_minor)
    );
END;
-- Payments as finance sees them (the unallocated list reads this).
CREATE TABLE IF NOT EXISTS payment_board (
    payment_id TEXT PRIMARY KEY,
    processor TEXT NOT NULL,
    payment_ref TEXT NOT NULL,
    purpose TEXT,
    trader_id TEXT,
    program_id TEXT,
    currency TEXT,
    amount_minor INTEGER,
    refunded_minor INTEGER NOT NULL DEFAULT 0,
    disputes TEXT NOT NULL DEFAULT '{}',
    account_id TEXT,
    received_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS payment_board_purpose_idx ON payment_board (purpose, received_at);
