SELECT stream_id, stream_version, global_position, event_type, payload::text AS payload,
       event_id, (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_at,
       correlation_id, causation_id, metadata::text AS metadata,
       NULL::text AS command_type, NULL::text[] AS command_streams,
       NULL::bigint[] AS command_versions, NULL::integer AS command_events,
       NULL::bigint AS command_recorded_at
FROM eventcore_events
WHERE stream_id = ANY($1)
  AND NOT EXISTS (SELECT 1 FROM eventcore_commands WHERE command_id = $2)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       command_type, streams, versions, events_written,
       (extract(epoch FROM recorded_at) * 1000000)::bigint
FROM eventcore_commands
WHERE command_id = $2
ORDER BY 3
