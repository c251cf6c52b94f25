SELECT stream_id AS out_stream, stream_version AS out_version, global_position AS out_position,
       event_type AS out_type, payload::text AS out_payload, event_id AS out_event_id,
       (extract(epoch FROM recorded_at) * 1000000)::bigint AS out_recorded_at,
       correlation_id AS out_correlation, causation_id AS out_causation,
       metadata::text AS out_metadata, schema_version AS out_schema_version,
       transaction_id::text AS out_commit
FROM eventcore_events
WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  AND ($3::text IS NULL OR starts_with(stream_id, $3))
  AND ($4::text[] IS NULL OR event_type = ANY($4))
ORDER BY transaction_id, global_position
LIMIT $5
