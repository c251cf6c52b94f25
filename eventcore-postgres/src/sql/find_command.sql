SELECT c.command_type AS out_command_type, c.streams AS out_command_streams,
       c.versions AS out_command_versions, c.events_written AS out_command_events,
       (extract(epoch FROM c.recorded_at) * 1000000)::bigint AS out_command_recorded_at,
       rp.out_commit AS out_command_commit, rp.out_position AS out_command_position
FROM eventcore_commands AS c
LEFT JOIN LATERAL eventcore_record_position(c.streams, c.versions) AS rp ON true
WHERE c.command_id = $1
