-- Migration to version 3: the version table records each step, when and by which release,
-- as on SQLite (one row per version; steps applied before this one have no time or release).
ALTER TABLE broker_schema_version ADD COLUMN applied_at double precision;
ALTER TABLE broker_schema_version ADD COLUMN release text;
ALTER TABLE broker_schema_version ADD PRIMARY KEY (version);
