-- The first integer of the append's stream locks (two-integer advisory lock
-- keys, kept apart by PostgreSQL from the bigint keys applications use): it
-- names the schema and the purpose. eventcore_lock_streams takes locks in
-- it and eventcore_log_fence looks for their holders.
CREATE OR REPLACE FUNCTION eventcore_lock_space() RETURNS integer
LANGUAGE sql STABLE
AS $$ SELECT hashtext(current_schema() || ':eventcore:append') $$;
