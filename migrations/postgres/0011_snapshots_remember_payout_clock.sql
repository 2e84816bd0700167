-- Account snapshots now hold the account's own clock at its last approved payout
-- (`last_payout_activity_at`: its newest trade or mark then), which the payout interval
-- is also counted on. Snapshots taken before do not have it: they are dropped and
-- retaken as accounts grow; nothing is lost (every account is its events).
DELETE FROM propledger_snapshots;
