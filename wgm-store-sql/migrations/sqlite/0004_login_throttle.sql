-- wgm schema v4 for SQLite: the login throttle's records (wgm_core::store::ThrottleStore),
-- shared by every process on the database so that N of them do not get N times the
-- password-guessing budget.
--
-- One row per throttle key (`account:<name key>` or `source:<address or /64>`), with the
-- record (wgm_core::auth::throttle::ThrottleState) as JSON in `body` and the Unix second
-- from which it is stale in `expires_at`. A row at or past its expiry reads as absent;
-- writes delete a bounded number of such rows as they go (the index). Swaps run in a
-- write transaction (BEGIN IMMEDIATE), so reading a record, comparing it with the one
-- expected and writing the next is one step.
--
-- Not store contents: no snapshot exports these rows, an import ignores them (they do
-- not make a database non-empty) and a forced restore keeps them. Nothing references
-- another table.
CREATE TABLE login_throttle (
    throttle_key TEXT PRIMARY KEY NOT NULL,
    body         TEXT NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX login_throttle_expires_at ON login_throttle (expires_at);
