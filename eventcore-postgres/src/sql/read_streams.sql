SELECT stream_id, stream_version, global_position, event_type, payload::text AS payload
FROM eventcore_events
WHERE stream_id = ANY($1)
ORDER BY global_position
