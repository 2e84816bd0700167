-- Payouts as finance sees them; reports are queries over this table. Amounts are integer
-- minor units of `currency` (fee refunds of `fee_refund_currency`).
CREATE TABLE IF NOT EXISTS payout_board (
    payout_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    trader_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    profit_minor INTEGER NOT NULL,
    profit_split_pct TEXT NOT NULL,
    trader_share_minor INTEGER NOT NULL,
    firm_share_minor INTEGER NOT NULL,
    fee_refund_minor INTEGER NOT NULL,
    fee_refund_currency TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    approved_by TEXT,
    approved_at TEXT,
    rejected_by TEXT,
    rejection_reason TEXT,
    paid_reference TEXT,
    paid_at TEXT,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS payout_board_status_idx ON payout_board (status, requested_at);
CREATE INDEX IF NOT EXISTS payout_board_approved_idx ON payout_board (approved_at);
