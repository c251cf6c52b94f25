SELECT * FROM eventcore_read_tails($1, $2)
