SELECT key, commit_id, sequence, event_id, stream_id, event_type, error, attempts,
       (extract(epoch FROM parked_at) * 1000000)::bigint AS parked_us,
       action, after_commit, after_sequence
FROM eventcore_dead_letters
WHERE name = $1
ORDER BY commit_id, sequence
