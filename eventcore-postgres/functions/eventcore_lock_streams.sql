-- The append's stream locks, transaction-scoped, on the two-integer form of
-- the advisory lock key, which PostgreSQL keeps apart from the bigint keys
-- applications use: the first integer names the schema and the purpose, the
-- second the stream. Taken in ascending key order, so that two appends over
-- common streams cannot deadlock.
CREATE OR REPLACE FUNCTION eventcore_lock_streams(p_streams text[]) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    space integer := hashtext(current_schema() || ':eventcore:append');
BEGIN
    -- In one order, so that two appends over common streams cannot
    -- deadlock.
    PERFORM pg_advisory_xact_lock(space, l.key)
    FROM (SELECT DISTINCT hashtext(s) AS key FROM unnest(p_streams) AS s ORDER BY 1) AS l;
END
$$;
