WITH fence AS (
    SELECT token FROM eventcore_leases WHERE name = $1 FOR SHARE
), moved AS (
    UPDATE eventcore_dead_letters AS d
    SET after_commit = $3, after_sequence = $4
    WHERE d.name = $1 AND d.key = $2
      AND coalesce((SELECT token FROM fence), 0) = $5
      AND (d.after_commit IS NULL OR (d.after_commit, d.after_sequence) < ($3, $4))
    RETURNING 1
)
SELECT coalesce((SELECT token FROM fence), 0) AS newest, EXISTS (SELECT 1 FROM moved) AS moved
