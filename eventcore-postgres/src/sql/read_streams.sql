SELECT stream_id AS out_stream, stream_version AS out_version, global_position AS out_position,
       event_type AS out_type, payload::text AS out_payload, event_id AS out_event_id,
       (extract(epoch FROM recorded_at) * 1000000)::bigint AS out_recorded_at,
       correlation_id AS out_correlation, causation_id AS out_causation,
       metadata::text AS out_metadata, schema_version AS out_schema_version
FROM eventcore_events
WHERE stream_id = ANY($1)
ORDER BY global_position
