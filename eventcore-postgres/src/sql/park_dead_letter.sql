WITH fence AS (
    SELECT token FROM eventcore_leases WHERE name = $1 FOR SHARE
), parked AS (
    INSERT INTO eventcore_dead_letters AS d
        (name, key, commit_id, sequence, event_id, stream_id, event_type, error, attempts,
         parked_at, action, after_commit, after_sequence)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9,
           timestamptz 'epoch' + $10 * interval '1 microsecond', NULL, $11, $12
    WHERE coalesce((SELECT token FROM fence), 0) = $13
    ON CONFLICT (name, key) DO UPDATE
    SET commit_id = EXCLUDED.commit_id, sequence = EXCLUDED.sequence,
        event_id = EXCLUDED.event_id, stream_id = EXCLUDED.stream_id,
        event_type = EXCLUDED.event_type, error = EXCLUDED.error,
        attempts = EXCLUDED.attempts, parked_at = EXCLUDED.parked_at, action = NULL,
        -- The replay mark is kept where it is further on.
        after_commit = CASE
            WHEN d.after_commit IS NULL
              OR (EXCLUDED.after_commit, EXCLUDED.after_sequence) > (d.after_commit, d.after_sequence)
            THEN EXCLUDED.after_commit ELSE d.after_commit END,
        after_sequence = CASE
            WHEN d.after_commit IS NULL
              OR (EXCLUDED.after_commit, EXCLUDED.after_sequence) > (d.after_commit, d.after_sequence)
            THEN EXCLUDED.after_sequence ELSE d.after_sequence END
    RETURNING 1
)
SELECT coalesce((SELECT token FROM fence), 0) AS newest, EXISTS (SELECT 1 FROM parked) AS moved
