SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':eventcore-subscription:' || $1, 0))
