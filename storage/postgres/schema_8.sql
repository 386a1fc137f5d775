-- Migration to version 8: messages carry their group (issue 24: ordered per group, fair
-- across groups). The partial index finds a group's oldest pending message for a claim.
ALTER TABLE broker_messages ADD COLUMN msg_group text;
CREATE INDEX broker_messages_by_group ON broker_messages (queue, msg_group, id)
    WHERE msg_group IS NOT NULL AND status <= 1;
