-- Account snapshots are a cache of the state the rules derive from the events. The rules
-- changed (late trades move the day start balance, late marks the day's equity base,
-- floors and targets are exact percentages, a new state field): snapshots taken before
-- would load a state a replay no longer gives. They are dropped and retaken as accounts
-- grow; nothing is lost (every account is its events).
DELETE FROM stored_snapshots;
