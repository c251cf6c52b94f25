-- The log's commit keys are transaction ids, which belong to a cluster: a
-- dump restored into another cluster, whose transaction ids may be far
-- lower, would put new events before the restored ones and hold every
-- reader below them. Each cluster that writes the log gets a shift, fixed
-- the first time it is used there (eventcore_commit_shift), that lifts its
-- transaction ids above every commit key already stored. The cluster that
-- wrote the events already stored gets 0, so keys written before this
-- migration keep their meaning. A standby promoted after a failover is the
-- same cluster (same system identifier, same transaction ids): same shift.
CREATE TABLE eventcore_log_clock (
    system_identifier bigint      PRIMARY KEY,
    shift             numeric     NOT NULL CHECK (shift >= 0),
    first_used_at     timestamptz NOT NULL DEFAULT now()
);
