-- wgm schema v1 for SQLite. Applied by wgm-store-sql's migration runner inside
-- BEGIN IMMEDIATE (so two processes opening one file at once cannot both apply it).
--
-- Layout: each row keeps the columns that are constrained or searched (ids, name keys,
-- keys, addresses, times as Unix nanoseconds) plus `body`, the model's serde JSON.
-- Sealed secrets live inside the JSON bodies as their ciphertext strings.

-- Head revision of every server that ever existed (kept after deletion: revisions
-- outlive the server, and a re-created server continues the numbering).
CREATE TABLE heads (
    server_id TEXT PRIMARY KEY NOT NULL,
    revision  INTEGER NOT NULL CHECK (revision > 0)
) STRICT;

-- Servers at their head revision.
CREATE TABLE servers (
    id         TEXT PRIMARY KEY NOT NULL REFERENCES heads (server_id),
    name_key   TEXT NOT NULL,
    interface  TEXT NOT NULL,
    public_key TEXT NOT NULL,
    body       TEXT NOT NULL,
    CONSTRAINT servers_name_unique UNIQUE (name_key)
) STRICT;

-- Peers at their server's head revision. The unique constraints repeat the store's
-- own checks (a second line of defence).
CREATE TABLE peers (
    server_id        TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    id               TEXT NOT NULL,
    name_key         TEXT NOT NULL,
    public_key       TEXT NOT NULL,
    address_v6       TEXT,
    address_v4       TEXT,
    delegated_prefix TEXT,
    body             TEXT NOT NULL,
    stats            TEXT NOT NULL,
    PRIMARY KEY (server_id, id),
    CONSTRAINT peers_name_unique UNIQUE (server_id, name_key),
    CONSTRAINT peers_public_key_unique UNIQUE (server_id, public_key),
    CONSTRAINT peers_address_v6_unique UNIQUE (server_id, address_v6),
    CONSTRAINT peers_address_v4_unique UNIQUE (server_id, address_v4),
    CONSTRAINT peers_prefix_unique UNIQUE (server_id, delegated_prefix)
) STRICT;

-- Append-only history.
CREATE TABLE revisions (
    server_id TEXT NOT NULL,
    revision  INTEGER NOT NULL,
    at_ns     INTEGER NOT NULL,
    author    TEXT NOT NULL,
    summary   TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (server_id, revision)
) STRICT;

-- What each host has applied (and verified).
CREATE TABLE applied (
    server_id TEXT NOT NULL,
    host      TEXT NOT NULL,
    revision  INTEGER NOT NULL,
    PRIMARY KEY (server_id, host)
) STRICT;

CREATE TABLE users (
    id       TEXT PRIMARY KEY NOT NULL,
    name_key TEXT NOT NULL,
    email    TEXT,
    version  INTEGER NOT NULL,
    body     TEXT NOT NULL,
    CONSTRAINT users_name_unique UNIQUE (name_key),
    CONSTRAINT users_email_unique UNIQUE (email)
) STRICT;

CREATE TABLE roles (
    name TEXT PRIMARY KEY NOT NULL,
    body TEXT NOT NULL
) STRICT;

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_ns INTEGER NOT NULL,
    body       TEXT NOT NULL
) STRICT;
CREATE INDEX tokens_user ON tokens (user_id);
CREATE INDEX tokens_created ON tokens (created_ns, id);

-- The hash-chained audit log. `body` is the AuditEntry JSON exactly as hashed.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY NOT NULL,
    at_ns     INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    server_id TEXT,
    object    TEXT NOT NULL,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;
CREATE INDEX audit_actor ON audit (actor, seq);
CREATE INDEX audit_server ON audit (server_id, seq);
CREATE INDEX audit_at ON audit (at_ns);

-- The last audit record's number and hash: appends read and advance it in the
-- writing transaction.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
) STRICT;
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
