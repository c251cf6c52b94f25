-- A read for a command with an id: the command's record if it is there
-- (then the streams are not read), else the read, in one consistent view
-- (a STABLE function sees one snapshot). A record row has no stream and
-- its record in the last seven columns: command type, streams, versions,
-- events written, recorded_at in microseconds, and the commit key and
-- position it points at (eventcore_record_position).
CREATE OR REPLACE FUNCTION eventcore_read_tails_for(p_streams text[], p_after bigint[], p_command text)
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
               out_payload text, out_event_id uuid, out_recorded_at bigint,
               out_correlation text, out_causation text, out_metadata text,
               out_schema_version bigint,
               out_command_type text, out_command_streams text[],
               out_command_versions bigint[], out_command_events integer,
               out_command_recorded_at bigint, out_command_commit text,
               out_command_position bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
        SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::uuid,
               NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
               c.command_type, c.streams, c.versions, c.events_written,
               (extract(epoch FROM c.recorded_at) * 1000000)::bigint,
               rp.out_commit, rp.out_position
        FROM eventcore_commands AS c
        LEFT JOIN LATERAL eventcore_record_position(c.streams, c.versions) AS rp ON true
        WHERE c.command_id = p_command;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT t.*, NULL::text, NULL::text[], NULL::bigint[], NULL::integer, NULL::bigint,
               NULL::text, NULL::bigint
        FROM eventcore_read_tails(p_streams, p_after) AS t;
END
$$;
