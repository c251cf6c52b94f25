SELECT * FROM eventcore_read_tails_for($1, $2, $3)
