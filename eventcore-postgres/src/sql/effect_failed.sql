UPDATE eventcore_outbox
SET last_error = $3,
    held = false,
    state = CASE WHEN $4 THEN 'parked' ELSE 'pending' END,
    due_at = CASE WHEN $4 THEN due_at ELSE now() + make_interval(secs => $5::float8 / 1000.0) END
WHERE effect_key = $1 AND claims = $2 AND held AND state = 'pending'
