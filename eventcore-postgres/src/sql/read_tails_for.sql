SELECT t.*,
       NULL::text AS command_type, NULL::text[] AS command_streams,
       NULL::bigint[] AS command_versions, NULL::integer AS command_events,
       NULL::bigint AS command_recorded_at
FROM eventcore_read_tails($1, $2) AS t
WHERE NOT EXISTS (SELECT 1 FROM eventcore_commands WHERE command_id = $3)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       command_type, streams, versions, events_written,
       (extract(epoch FROM recorded_at) * 1000000)::bigint
FROM eventcore_commands
WHERE command_id = $3
