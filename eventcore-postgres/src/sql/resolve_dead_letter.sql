UPDATE eventcore_dead_letters SET action = $3 WHERE name = $1 AND key = $2
