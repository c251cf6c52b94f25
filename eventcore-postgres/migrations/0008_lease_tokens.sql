-- Fencing tokens for subscription leases (issue 20). Each time an instance
-- takes the advisory lock of a subscription's lease it raises the name's
-- token here, in the same statement; every checkpoint save (and every
-- exactly-once projection's transaction) checks its token against this row
-- and moves the checkpoint only forward, so a holder that lost its lease
-- commits nothing after a newer holder took over.
CREATE TABLE eventcore_leases (
    name        text        PRIMARY KEY,
    token       bigint      NOT NULL,
    holder_pid  integer     NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now()
);
