SELECT stream_id, stream_version, global_position, event_type, payload::text AS payload,
       event_id, (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_at,
       correlation_id, causation_id, metadata::text AS metadata, schema_version
FROM eventcore_events
WHERE stream_id = ANY($1)
ORDER BY global_position
