-- A claim handed back unattempted: due at once, and not counted as an
-- attempt (retried_from counts the claims that are not attempts).
UPDATE eventcore_outbox
SET held = false, due_at = now(), retried_from = retried_from + 1
WHERE effect_key = $1 AND claims = $2 AND held AND state = 'pending'
