-- wgm schema v3 for PostgreSQL: the hosts that apply servers (wgm_core::model::Lease and
-- HostReport; wgm_core::store::HostStateStore).
--
-- Both tables are keyed by server and host, with the model's serde JSON in `body`.
-- Neither references `servers`: like `applied`, they are state of a host, not of a
-- revision, and may name a server that was deleted meanwhile. Writers of either table
-- first take the transaction-scoped advisory lock of their server and host
-- (`pg_advisory_xact_lock(hashtextextended('wgm.lease:<server>:<host>', 0))`), so a
-- lease grant, a release and a report of one host are serialized: reading the lease,
-- deciding on it (Lease::decide, Lease::released, Lease::admit) and writing the outcome
-- is one step, also for the first row of a key, which no row lock could protect.

-- The lease of each server on each host: who may apply it there, until when, and its
-- fencing number (raised at every grant to a new holder; a released lease is kept with
-- an empty holder, so the next grant still raises it).
CREATE TABLE wgm.leases (
    server_id uuid NOT NULL,
    host      text NOT NULL,
    body      jsonb NOT NULL,
    PRIMARY KEY (server_id, host)
);

-- The latest report of each host about each server (what it applied, whether it
-- converged, its heartbeat). Listed by host name in byte order (`COLLATE "C"`).
CREATE TABLE wgm.host_reports (
    server_id uuid NOT NULL,
    host      text NOT NULL,
    body      jsonb NOT NULL,
    PRIMARY KEY (server_id, host)
);

-- What stands for the device a host verified at its applied revision
-- (wgm_core::model::AppliedState): the device's incarnation (a u64, stored with the same
-- bits as a signed bigint) and when it was last read in full (Unix nanoseconds). Both
-- NULL after a plain set_applied, which makes no claim about the device.
ALTER TABLE wgm.applied ADD COLUMN instance bigint, ADD COLUMN verified_ns bigint;

-- The durable allocator state of each server (wgm_core::ipam::HeldRuns as JSON): the
-- host indices its peers hold, as runs, at `revision`. A cache of what the revisions
-- say, written after commits and checked against the log by its reader; a newer
-- revision replaces an older one, never the other way round.
CREATE TABLE wgm.allocators (
    server_id uuid PRIMARY KEY,
    revision  bigint NOT NULL,
    body      jsonb NOT NULL
);
