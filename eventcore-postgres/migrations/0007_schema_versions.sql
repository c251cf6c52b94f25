-- Schema versions (issue 13): each event keeps the schema version of its
-- type it was written at, so a reader whose type has moved on knows to
-- upcast it. Rows written before this migration read as version 1 (a
-- constant default: no table rewrite, and no UPDATE, which the
-- immutability triggers would refuse anyway).
ALTER TABLE eventcore_events ADD COLUMN schema_version bigint NOT NULL DEFAULT 1;

-- The functions this version needs are defined once each in functions/
-- and re-applied by migrate() whenever their text changes.
