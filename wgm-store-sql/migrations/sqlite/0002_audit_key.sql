-- wgm schema v2 for SQLite: the store's audit key (wgm_core::integrity).
--
-- The audit chain's links and the revisions' MACs are HMAC-SHA256 under a random key
-- made once per store. It is kept here sealed with the master key (`sealed`, the text
-- form of a SealedSecret), so writing to this database is not enough to compute a link.
-- `legacy` (JSON) is what the store held when the key was made — the last unkeyed audit
-- record and each server's head revision — and is bound into the sealed value's
-- associated data: moving it makes the key fail to open. At most one row, inserted once
-- (`INSERT ... ON CONFLICT DO NOTHING`, then read back).
CREATE TABLE audit_key (
    id     INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    sealed TEXT NOT NULL,
    legacy TEXT NOT NULL
) STRICT;
