SELECT * FROM eventcore_read_from_snapshot_for($1, $2, $3, $4)
