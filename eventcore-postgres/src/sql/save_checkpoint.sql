INSERT INTO eventcore_checkpoints (name, commit_id, sequence)
VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET commit_id = EXCLUDED.commit_id, sequence = EXCLUDED.sequence, updated_at = now()
