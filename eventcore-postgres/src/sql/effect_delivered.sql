UPDATE eventcore_outbox SET state = 'delivered', held = false, done_at = now()
WHERE effect_key = $1 AND claims = $2 AND held AND state = 'pending'
