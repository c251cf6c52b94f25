-- Where a command's record points in the global log: the commit key and
-- global position of the last, in log order, of the events at the
-- record's streams and resulting versions. That is at or after the
-- command's own last event (a stream it only read may hold a later one),
-- so a reader that has passed it has seen the command's events. No row
-- when the record has no event at any of its versions.
CREATE OR REPLACE FUNCTION eventcore_record_position(p_streams text[], p_versions bigint[])
RETURNS TABLE (out_commit text, out_position bigint)
LANGUAGE sql STABLE
AS $$
    SELECT e.transaction_id::text, e.global_position
    FROM eventcore_events AS e
    JOIN unnest(p_streams, p_versions) AS r(sid, version)
      ON e.stream_id = r.sid AND e.stream_version = r.version
    ORDER BY e.transaction_id DESC, e.global_position DESC
    LIMIT 1
$$;
