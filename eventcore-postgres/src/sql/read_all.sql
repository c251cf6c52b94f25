SELECT stream_id, stream_version, global_position, event_type, payload::text AS payload,
       event_id, (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_at,
       correlation_id, causation_id, metadata::text AS metadata, schema_version,
       transaction_id::text AS commit
FROM eventcore_events
WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  AND ($3::text IS NULL OR starts_with(stream_id, $3))
  AND ($4::text[] IS NULL OR event_type = ANY($4))
ORDER BY transaction_id, global_position
LIMIT $5
