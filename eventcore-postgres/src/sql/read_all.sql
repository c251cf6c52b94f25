SELECT * FROM eventcore_read_all($1, $2, $3, $4, $5, $6)
