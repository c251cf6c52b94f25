SELECT * FROM eventcore_read_from_snapshot($1, $2, $3)
