WITH locked AS (
    SELECT pg_try_advisory_lock(hashtext(current_schema() || ':eventcore:lease'), hashtext($1)) AS got
)
INSERT INTO eventcore_leases AS l (name, token, holder_pid)
SELECT $1, 1, pg_backend_pid() FROM locked WHERE locked.got
ON CONFLICT (name) DO UPDATE
SET token = l.token + 1, holder_pid = EXCLUDED.holder_pid, taken_at = now()
RETURNING token
