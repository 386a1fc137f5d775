-- Migration to version 4: topics and their bindings (storage/postgres/topics.py).
-- ``version`` moves with every change of a topic's bindings: a node reads it before routing,
-- so a binding made on one node routes the next publish on any other.
CREATE TABLE broker_topics (
    name       text PRIMARY KEY,
    created_at double precision NOT NULL,
    version    bigint NOT NULL DEFAULT 0
);
CREATE TABLE broker_topic_bindings (
    topic      text NOT NULL REFERENCES broker_topics (name) ON DELETE CASCADE,
    queue      text NOT NULL,
    pattern    text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (topic, queue, pattern)
);
CREATE INDEX broker_topic_bindings_by_queue ON broker_topic_bindings (queue);
