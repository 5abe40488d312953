-- wgm schema v3 for SQLite: the hosts that apply servers (wgm_core::model::Lease and
-- HostReport; wgm_core::store::HostStateStore).
--
-- Both tables are keyed by server and host, with the model's serde JSON in `body`.
-- Neither references `servers`: like `applied`, they are state of a host, not of a
-- revision, and may name a server that was deleted meanwhile. Writers of either table
-- hold the write lock (BEGIN IMMEDIATE), so reading a lease, deciding on it
-- (Lease::decide, Lease::released, Lease::admit) and writing the outcome is one step.

-- The lease of each server on each host: who may apply it there, until when, and its
-- fencing number (raised at every grant to a new holder; a released lease is kept with
-- an empty holder, so the next grant still raises it).
CREATE TABLE leases (
    server_id TEXT NOT NULL,
    host      TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (server_id, host)
) STRICT;

-- The latest report of each host about each server (what it applied, whether it
-- converged, its heartbeat). Listed by host name in byte order (SQLite's default
-- BINARY collation).
CREATE TABLE host_reports (
    server_id TEXT NOT NULL,
    host      TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (server_id, host)
) STRICT;

-- What stands for the device a host verified at its applied revision
-- (wgm_core::model::AppliedState): the device's incarnation (a u64, stored with the same
-- bits as a signed integer) and when it was last read in full. Both NULL after a plain
-- set_applied, which makes no claim about the device.
ALTER TABLE applied ADD COLUMN instance INTEGER;
ALTER TABLE applied ADD COLUMN verified_ns INTEGER;

-- The durable allocator state of each server (wgm_core::ipam::HeldRuns as JSON): the
-- host indices its peers hold, as runs, at `revision`. A cache of what the revisions
-- say, written after commits and checked against the log by its reader; a newer
-- revision replaces an older one, never the other way round.
CREATE TABLE allocators (
    server_id TEXT PRIMARY KEY NOT NULL,
    revision  INTEGER NOT NULL,
    body      TEXT NOT NULL
) STRICT;
