SELECT id, effect_key, reactor, destination, payload::text AS payload, event_id, commit_id, sequence,
       state, claims, retried_from, last_error,
       (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_us
FROM eventcore_outbox
WHERE ($1::text IS NULL OR effect_key = $1) AND ($2::text IS NULL OR state = $2)
ORDER BY id
