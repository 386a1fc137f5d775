-- The broker's SQLite schema (version 1), the first step of migrations.py on a new file.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS queues (
    name       TEXT PRIMARY KEY,
    options    BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    processed  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- status: 0 pending, 1 processing, 2 processed, 3 failed
CREATE TABLE IF NOT EXISTS messages (
    id                 INTEGER PRIMARY KEY,
    queue              TEXT NOT NULL,
    status             INTEGER NOT NULL,
    priority           INTEGER NOT NULL DEFAULT 0,
    attempt            INTEGER NOT NULL DEFAULT 0,
    redelivered        INTEGER NOT NULL DEFAULT 0,
    created_at         REAL NOT NULL,
    deliver_at         REAL NOT NULL DEFAULT 0,
    expires_at         REAL NOT NULL DEFAULT 0,
    settled_at         REAL NOT NULL DEFAULT 0,
    lease_deadline     REAL NOT NULL DEFAULT 0,
    size               INTEGER NOT NULL,
    content            BLOB NOT NULL,
    headers            BLOB,
    dedup_id           TEXT,
    last_error         TEXT,
    dead_lettered_from TEXT
);

CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, status, id);
CREATE INDEX IF NOT EXISTS messages_settled ON messages (status, settled_at) WHERE status >= 2;

CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    document BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS refresh_tokens (
    jti        TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    username   TEXT NOT NULL,
    expires_at REAL NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS refresh_by_family ON refresh_tokens (family);
CREATE INDEX IF NOT EXISTS refresh_by_user ON refresh_tokens (username);
