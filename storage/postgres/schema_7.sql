-- Migration to version 7: webhooks (issue 27), one JSON document per webhook with its queue.
CREATE TABLE broker_webhooks (
    id text PRIMARY KEY,
    queue text NOT NULL,
    document bytea NOT NULL
);
