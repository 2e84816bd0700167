-- Account snapshots now hold the account's own clock when it passed
-- (`passed_activity_at`: its newest trade or mark then), where the next account opens on
-- that clock for its first payout's days. Snapshots taken before do not have it: they are
-- dropped and retaken as accounts grow; nothing is lost (every account is its events).
DELETE FROM propledger_snapshots;
