WITH fence AS (
    SELECT token FROM eventcore_leases WHERE name = $1 FOR SHARE
), saved AS (
    INSERT INTO eventcore_checkpoints AS c (name, commit_id, sequence)
    SELECT $1, $2, $3
    WHERE coalesce((SELECT token FROM fence), 0) = $4
    ON CONFLICT (name) DO UPDATE
    SET commit_id = EXCLUDED.commit_id, sequence = EXCLUDED.sequence, updated_at = now()
    WHERE (c.commit_id, c.sequence) < (EXCLUDED.commit_id, EXCLUDED.sequence)
    RETURNING 1
)
SELECT coalesce((SELECT token FROM fence), 0) AS newest, EXISTS (SELECT 1 FROM saved) AS moved
