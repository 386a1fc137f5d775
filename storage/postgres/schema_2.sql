-- Migration to version 2: several broker nodes on one database (cluster mode).
-- Applied after schema.sql (version 1) on a new database, or alone on a version 1 one.

-- The node that holds a message while it is processing (broker_nodes.id): a node's
-- writes touch only the leases it holds, and a dead node's leases go back to pending.
ALTER TABLE broker_messages ADD COLUMN owner bigint;

-- Claims walk this index: ready messages of a queue in delivery order.
CREATE INDEX broker_messages_ready ON broker_messages (queue, priority DESC, id) WHERE status = 0;
CREATE INDEX broker_messages_leased ON broker_messages (owner) WHERE status = 1;
CREATE INDEX broker_messages_expiring ON broker_messages (expires_at)
    WHERE status = 0 AND expires_at > 0;

-- One row per running node, refreshed by its heartbeat. `id` is new at every start (the
-- fencing token in broker_messages.owner); `slot` is unique among the nodes not yet
-- forgotten and is part of the message ids the node makes (broker_core.ids).
CREATE TABLE broker_nodes (
    id           bigserial PRIMARY KEY,
    slot         integer NOT NULL UNIQUE,
    name         text NOT NULL,
    started_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    dead         boolean NOT NULL DEFAULT false
);
