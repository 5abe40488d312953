-- wgm schema v1 for PostgreSQL, in schema `wgm`. Applied by wgm-store-sql's migration
-- runner in one transaction under an advisory lock.
--
-- Layout: each row keeps the columns that are constrained or searched (uuid ids, name
-- keys, keys, inet addresses, times as Unix nanoseconds) plus `body`, the model's serde
-- JSON. Sealed secrets live inside the JSON bodies as their ciphertext strings.

-- Head revision of every server that ever existed. Commits lock this row
-- (SELECT ... FOR UPDATE), so concurrent writers of one server serialize here.
CREATE TABLE wgm.heads (
    server_id uuid PRIMARY KEY,
    revision  bigint NOT NULL CHECK (revision > 0)
);

CREATE TABLE wgm.servers (
    id         uuid PRIMARY KEY REFERENCES wgm.heads (server_id),
    name_key   text NOT NULL,
    interface  text NOT NULL,
    public_key text NOT NULL,
    body       jsonb NOT NULL,
    CONSTRAINT servers_name_unique UNIQUE (name_key)
);

-- The unique constraints repeat the store's own checks (a second line of defence).
-- `inet` keeps host bits and prefix length, so equality is exactly the model's.
CREATE TABLE wgm.peers (
    server_id        uuid NOT NULL REFERENCES wgm.servers (id) ON DELETE CASCADE,
    id               uuid NOT NULL,
    name_key         text NOT NULL,
    public_key       text NOT NULL,
    address_v6       inet CHECK (family(address_v6) = 6 AND masklen(address_v6) = 128),
    address_v4       inet CHECK (family(address_v4) = 4 AND masklen(address_v4) = 32),
    delegated_prefix inet CHECK (family(delegated_prefix) = 6),
    body             jsonb NOT NULL,
    stats            jsonb NOT NULL,
    PRIMARY KEY (server_id, id),
    CONSTRAINT peers_name_unique UNIQUE (server_id, name_key),
    CONSTRAINT peers_public_key_unique UNIQUE (server_id, public_key),
    CONSTRAINT peers_address_v6_unique UNIQUE (server_id, address_v6),
    CONSTRAINT peers_address_v4_unique UNIQUE (server_id, address_v4),
    CONSTRAINT peers_prefix_unique UNIQUE (server_id, delegated_prefix)
);

CREATE TABLE wgm.revisions (
    server_id uuid NOT NULL,
    revision  bigint NOT NULL,
    at_ns     bigint NOT NULL,
    author    text NOT NULL,
    summary   text NOT NULL,
    body      jsonb NOT NULL,
    PRIMARY KEY (server_id, revision)
);

CREATE TABLE wgm.applied (
    server_id uuid NOT NULL,
    host      text NOT NULL,
    revision  bigint NOT NULL,
    PRIMARY KEY (server_id, host)
);

CREATE TABLE wgm.users (
    id       uuid PRIMARY KEY,
    name_key text NOT NULL,
    email    text,
    version  bigint NOT NULL,
    body     jsonb NOT NULL,
    CONSTRAINT users_name_unique UNIQUE (name_key),
    CONSTRAINT users_email_unique UNIQUE (email)
);

CREATE TABLE wgm.roles (
    name text PRIMARY KEY,
    body jsonb NOT NULL
);

CREATE TABLE wgm.tokens (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES wgm.users (id) ON DELETE CASCADE,
    created_ns bigint NOT NULL,
    body       jsonb NOT NULL
);
CREATE INDEX tokens_user ON wgm.tokens (user_id);
CREATE INDEX tokens_created ON wgm.tokens (created_ns, id);

-- The hash-chained audit log. `body` is `json` (not `jsonb`): the text is kept exactly
-- as it was hashed.
CREATE TABLE wgm.audit (
    seq       bigint PRIMARY KEY,
    at_ns     bigint NOT NULL,
    actor     text NOT NULL,
    server_id uuid,
    object    text NOT NULL,
    body      json NOT NULL,
    prev_hash text NOT NULL,
    hash      text NOT NULL
);
CREATE INDEX audit_actor ON wgm.audit (actor, seq);
CREATE INDEX audit_server ON wgm.audit (server_id, seq);
CREATE INDEX audit_at ON wgm.audit (at_ns);

-- The last audit record's number and hash. Appends lock this row FOR UPDATE, which
-- serializes them (always as the last lock a transaction takes, so no deadlock).
CREATE TABLE wgm.audit_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO wgm.audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
