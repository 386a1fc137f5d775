-- Migration to version 5: service tokens (broker_core.service_tokens), one stored document
-- each (its secret only as a SHA-256); revoking one deletes its row.
CREATE TABLE broker_service_tokens (
    id       text PRIMARY KEY,
    document bytea NOT NULL
);
