SELECT stream_id, max(stream_version) AS version
FROM eventcore_events
WHERE stream_id = ANY($1)
GROUP BY stream_id
