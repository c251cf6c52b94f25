SELECT command_type, streams, versions, events_written,
       (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_at
FROM eventcore_commands
WHERE command_id = $1
