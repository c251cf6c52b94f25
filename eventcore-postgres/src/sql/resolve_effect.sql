UPDATE eventcore_outbox
SET state = CASE WHEN $2 = 'retry' THEN 'pending' ELSE 'skipped' END,
    retried_from = CASE WHEN $2 = 'retry' THEN claims ELSE retried_from END,
    held = false,
    due_at = now()
WHERE effect_key = $1 AND state = 'parked'
