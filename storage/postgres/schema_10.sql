-- Migration to version 10: ended messages. A message cancelled, expired or dropped with no
-- dead-letter queue keeps a body-less row with status 4 (its history stays readable for the
-- processed retention). broker_messages_by_queue (queue, status, id) and
-- broker_messages_settled (status, settled_at) WHERE status >= 2 already serve its pruning;
-- the version step is what keeps an older release (which can't read status 4) off the
-- database.
COMMENT ON COLUMN broker_messages.status IS
    '0 pending, 1 processing, 2 processed, 3 failed, 4 ended (cancelled, expired, dropped)';
