-- The append's stream locks, transaction-scoped, in eventcore_lock_space:
-- the second integer names the stream. Taken in ascending key order, so
-- that two appends over common streams cannot deadlock. They are held from
-- before the appending transaction has an id until after its commit is
-- visible, which is what eventcore_log_fence relies on.
CREATE OR REPLACE FUNCTION eventcore_lock_streams(p_streams text[]) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    space integer := eventcore_lock_space();
BEGIN
    PERFORM pg_advisory_xact_lock(space, l.key)
    FROM (SELECT DISTINCT hashtext(s) AS key FROM unnest(p_streams) AS s ORDER BY 1) AS l;
END
$$;
