INSERT INTO eventcore_outbox (effect_key, reactor, destination, payload, event_id, commit_id, sequence)
SELECT k, $2, d, p::jsonb, $5, $6, $7
FROM unnest($1::text[], $3::text[], $4::text[]) AS e(k, d, p)
ON CONFLICT (effect_key) DO NOTHING
