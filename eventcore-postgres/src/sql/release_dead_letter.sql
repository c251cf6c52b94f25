WITH fence AS (
    SELECT token FROM eventcore_leases WHERE name = $1 FOR SHARE
), released AS (
    DELETE FROM eventcore_dead_letters AS d
    WHERE d.name = $1 AND d.key = $2
      AND coalesce((SELECT token FROM fence), 0) = $3
    RETURNING 1
)
SELECT coalesce((SELECT token FROM fence), 0) AS newest, EXISTS (SELECT 1 FROM released) AS moved
