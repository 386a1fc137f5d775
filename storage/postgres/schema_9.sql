-- Migration to version 9: message histories (a column of the row, appended to as JSON
-- lines, gone with it) and ack results, kept by message id and deleted with their message
-- (a trigger, so that no write of a result can fail a batch).
ALTER TABLE broker_messages ADD COLUMN history text;
CREATE TABLE broker_message_results (
    message_id bigint PRIMARY KEY,
    result bytea NOT NULL
);
CREATE FUNCTION broker_message_results_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM broker_message_results WHERE message_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER broker_message_results_gone AFTER DELETE ON broker_messages
    FOR EACH ROW EXECUTE FUNCTION broker_message_results_gone();
