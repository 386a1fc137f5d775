-- The broker's PostgreSQL schema (version 1). Applied at open, in one transaction, when
-- broker_schema_version is missing; later versions add numbered migrations (migrations.py).
-- Same tables and columns as sqlite/schema.sql, prefixed with broker_ so the broker can
-- share a database. Instants are epoch seconds in double precision, as the core keeps them.

CREATE TABLE broker_schema_version (
    version integer NOT NULL
);

CREATE TABLE broker_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE broker_queues (
    name       text PRIMARY KEY,
    options    jsonb NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    processed  bigint NOT NULL DEFAULT 0
);

-- status: 0 pending, 1 processing, 2 processed, 3 failed
CREATE TABLE broker_messages (
    id                 bigint PRIMARY KEY,
    queue              text NOT NULL,
    status             smallint NOT NULL,
    priority           integer NOT NULL DEFAULT 0,
    attempt            integer NOT NULL DEFAULT 0,
    redelivered        boolean NOT NULL DEFAULT false,
    created_at         double precision NOT NULL,
    deliver_at         double precision NOT NULL DEFAULT 0,
    expires_at         double precision NOT NULL DEFAULT 0,
    settled_at         double precision NOT NULL DEFAULT 0,
    lease_deadline     double precision NOT NULL DEFAULT 0,
    size               integer NOT NULL,
    content            bytea NOT NULL,
    headers            bytea,
    dedup_id           text,
    last_error         text,
    dead_lettered_from text
);

CREATE INDEX broker_messages_by_queue ON broker_messages (queue, status, id);
CREATE INDEX broker_messages_settled ON broker_messages (status, settled_at) WHERE status >= 2;

CREATE TABLE broker_users (
    username text PRIMARY KEY,
    document bytea NOT NULL
);

CREATE TABLE broker_refresh_tokens (
    jti        text PRIMARY KEY,
    family     text NOT NULL,
    username   text NOT NULL,
    expires_at double precision NOT NULL,
    revoked    boolean NOT NULL DEFAULT false
);

CREATE INDEX broker_refresh_by_family ON broker_refresh_tokens (family);
CREATE INDEX broker_refresh_by_user ON broker_refresh_tokens (username);
