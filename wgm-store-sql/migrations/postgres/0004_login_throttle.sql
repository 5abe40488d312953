-- wgm schema v4 for PostgreSQL: the login throttle's records
-- (wgm_core::store::ThrottleStore), shared by every process on the database (the copies
-- of a REST server) so that N of them do not get N times the password-guessing budget.
--
-- One row per throttle key (`account:<name key>` or `source:<address or /64>`), with the
-- record (wgm_core::auth::throttle::ThrottleState) as JSON in `body` and the Unix second
-- from which it is stale in `expires_at`. A row at or past its expiry reads as absent;
-- writes delete a bounded number of such rows as they go (the index; rows another
-- transaction holds are skipped, `FOR UPDATE SKIP LOCKED`). A swap first takes the
-- transaction-scoped advisory lock of its key
-- (`pg_advisory_xact_lock(hashtextextended('wgm.throttle:<key>', 0))`), so reading the
-- record, comparing it with the one expected and writing the next is one step, also for
-- the first record of a key, which no row lock could protect.
--
-- Not store contents: no snapshot exports these rows, an import ignores them (they do
-- not make a database non-empty) and a forced restore keeps them.
CREATE TABLE wgm.login_throttle (
    throttle_key text PRIMARY KEY,
    body         jsonb NOT NULL,
    expires_at   bigint NOT NULL
);

CREATE INDEX login_throttle_expires_at ON wgm.login_throttle (expires_at);
