-- A page of the global log with a stream-prefix or event-type filter. The
-- walk of the commit-order index stops after $6 events, matching or not,
-- whatever the filters and the table's statistics (a plan that starts from
-- the filter reads and sorts every matching event on each page), and the
-- matching ones are returned, up to $5 (kind 0). When fewer match, one more
-- row (kind 1) holds the last event the walk looked at: where the next
-- page starts. Subqueries rather than a shared CTE keep the index order
-- known to the planner (no sort) and nothing spilled to disk.
WITH matched AS (
    SELECT stream_id AS out_stream, stream_version AS out_version,
           global_position AS out_position, event_type AS out_type,
           payload::text AS out_payload, event_id AS out_event_id,
           (extract(epoch FROM recorded_at) * 1000000)::bigint AS out_recorded_at,
           correlation_id AS out_correlation, causation_id AS out_causation,
           metadata::text AS out_metadata, schema_version AS out_schema_version,
           transaction_id::text AS out_commit, 0 AS out_kind
    FROM (SELECT *
          FROM eventcore_events
          WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
            AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY transaction_id, global_position
          LIMIT $6) AS walked
    WHERE ($3::text IS NULL OR starts_with(stream_id, $3))
      AND ($4::text[] IS NULL OR event_type = ANY($4))
    ORDER BY transaction_id, global_position
    LIMIT $5
)
SELECT * FROM matched
UNION ALL
SELECT NULL, NULL, last.global_position, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       last.transaction_id::text, 1
FROM (SELECT transaction_id, global_position
      FROM (SELECT transaction_id, global_position
            FROM eventcore_events
            WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
              AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY transaction_id, global_position
            LIMIT $6) AS walked
      ORDER BY transaction_id DESC, global_position DESC
      LIMIT 1) AS last
WHERE (SELECT count(*) FROM matched) < $5
