SELECT commit_id, sequence FROM eventcore_checkpoints WHERE name = $1
