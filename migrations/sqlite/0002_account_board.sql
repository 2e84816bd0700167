-- Exactly-once tracking for projections: a projection's rows and its position are written
-- in one transaction.
CREATE TABLE IF NOT EXISTS projection_tracking (
    projection TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
-- The account board: one row per trading account with its state fields. Amounts are
-- exact decimal strings.
CREATE TABLE IF NOT EXISTS account_board (
    account_id TEXT PRIMARY KEY,
    trader_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    program_version INTEGER NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    initial_balance TEXT NOT NULL,
    balance TEXT NOT NULL,
    equity TEXT NOT NULL,
    high_water_mark TEXT NOT NULL,
    day_start_balance TEXT NOT NULL,
    daily_loss_floor TEXT NOT NULL,
    max_loss_floor TEXT NOT NULL,
    trading_days INTEGER NOT NULL,
    profit TEXT NOT NULL,
    current_day TEXT,
    breach TEXT,
    passed_at TEXT,
    next_account_id TEXT,
    opened_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS account_board_trader_idx ON account_board (trader_id, opened_at);
