-- Migration to version 6: recurring schedules (broker_core.schedules). A queue's schedules
-- go with it. last_fired is set in the batch of the message fired; claimed_for/claimed_by
-- make one node fire each instant (a compare-and-set; a dead node's claim may be taken over).
CREATE TABLE broker_schedules (
    queue       text NOT NULL REFERENCES broker_queues (name) ON DELETE CASCADE,
    name        text NOT NULL,
    definition  bytea NOT NULL,
    created_at  double precision NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    resumed_at  double precision NOT NULL DEFAULT 0,
    last_fired  double precision,
    claimed_for double precision,
    claimed_by  bigint,
    PRIMARY KEY (queue, name)
);
