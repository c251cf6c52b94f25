UPDATE eventcore_outbox o
SET claims = o.claims + 1,
    held = true,
    due_at = now() + make_interval(secs => $2::float8 / 1000.0)
FROM (
    SELECT id FROM eventcore_outbox
    WHERE state = 'pending' AND due_at <= now()
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) due
WHERE o.id = due.id
RETURNING o.id, o.effect_key, o.reactor, o.destination, o.payload::text AS payload, o.event_id,
          o.commit_id, o.sequence, o.state, o.claims, o.retried_from, o.last_error,
          (extract(epoch FROM o.recorded_at) * 1000000)::bigint AS recorded_us
