DELETE FROM eventcore_commands
WHERE recorded_at < now() - $1 * interval '1 microsecond'
