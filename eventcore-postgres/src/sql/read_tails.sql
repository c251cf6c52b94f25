SELECT r.sid AS stream_id,
       coalesce((SELECT max(e.stream_version) FROM eventcore_events AS e WHERE e.stream_id = r.sid), 0)
           AS stream_version,
       NULL::bigint AS global_position, NULL::text AS event_type, NULL::text AS payload
FROM unnest($1::text[]) AS r(sid)
UNION ALL
SELECT e.stream_id, e.stream_version, e.global_position, e.event_type, e.payload::text
FROM unnest($1::text[], $2::bigint[]) AS r(sid, after)
JOIN eventcore_events AS e ON e.stream_id = r.sid AND e.stream_version > r.after
ORDER BY 3 NULLS FIRST
