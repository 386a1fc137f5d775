-- Migration to version 4: ack results and message histories, keyed by message id,
-- deleted with their message (a trigger, so that no write of them can fail a batch).
CREATE TABLE broker_message_history (
    message_id bigint NOT NULL,
    at double precision NOT NULL,
    event bytea NOT NULL
);
CREATE INDEX broker_message_history_by_message ON broker_message_history (message_id);
CREATE TABLE broker_message_results (
    message_id bigint PRIMARY KEY,
    result bytea NOT NULL
);
CREATE FUNCTION broker_message_extras_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM broker_message_history WHERE message_id = OLD.id;
    DELETE FROM broker_message_results WHERE message_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER broker_message_extras_gone AFTER DELETE ON broker_messages
    FOR EACH ROW EXECUTE FUNCTION broker_message_extras_gone();
