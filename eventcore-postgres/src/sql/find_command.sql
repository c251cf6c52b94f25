SELECT command_type AS out_command_type, streams AS out_command_streams,
       versions AS out_command_versions, events_written AS out_command_events,
       (extract(epoch FROM recorded_at) * 1000000)::bigint AS out_command_recorded_at
FROM eventcore_commands
WHERE command_id = $1
