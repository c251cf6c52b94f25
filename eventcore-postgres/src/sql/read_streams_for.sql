SELECT * FROM eventcore_read_streams_for($1, $2)
