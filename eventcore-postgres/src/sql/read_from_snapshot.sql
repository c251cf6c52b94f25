WITH snap AS (
    SELECT schema_version, versions, state
    FROM eventcore_snapshots
    WHERE state_name = $1 AND md5(state_key) = md5($2) AND state_key = $2
),
held AS (
    SELECT r.sid,
           CASE WHEN (SELECT cardinality(versions) FROM snap) = cardinality($3::text[])
                     AND (SELECT min(v) FROM snap, unnest(snap.versions) AS v) >= 0
                THEN (SELECT versions[r.ord] FROM snap)
                ELSE 0 END AS after
    FROM unnest($3::text[]) WITH ORDINALITY AS r(sid, ord)
)
SELECT NULL::text AS stream_id, schema_version AS stream_version, NULL::bigint AS global_position,
       NULL::text AS event_type, state AS payload, versions AS snapshot_versions, NULL::bigint AS after
FROM snap
UNION ALL
SELECT h.sid,
       coalesce((SELECT max(e.stream_version) FROM eventcore_events AS e WHERE e.stream_id = h.sid), 0),
       NULL, NULL, NULL, NULL, h.after
FROM held AS h
UNION ALL
SELECT e.stream_id, e.stream_version, e.global_position, e.event_type, e.payload::text, NULL, NULL
FROM held AS h
JOIN eventcore_events AS e ON e.stream_id = h.sid AND e.stream_version > h.after
ORDER BY 3 NULLS FIRST
