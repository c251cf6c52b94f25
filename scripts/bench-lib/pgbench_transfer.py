"""Writes a pgbench script that sends exactly the statements eventcore-postgres
sends for one uncontended two-stream transfer: its read of both streams, then
its call of eventcore_append. The SQL is read from the store's own .sql files,
so the two cannot drift apart; only the bind parameters are spelled out.

Each pgbench client owns `k` pairs of streams and visits them in turn
(variable i, starting at 0 via -D i=0), so it always knows their versions:
pair i % k stands at version i / k. Streams therefore grow as in the load
tool's transfer workload over 10,000 accounts.

With --append-only it leaves the read out: the append call alone, what a
command starting from a kept state sends (the one-round-trip limit).
"""
import re
import sys
from pathlib import Path

src = Path(sys.argv[1])  # eventcore-postgres/src/sql
append_only = "--append-only" in sys.argv[2:]
read_sql = (src / "read_streams.sql").read_text().strip()
append_sql = (src / "append.sql").read_text().strip()

a = "concat('pgb-', :run::text, '-', :client_id::text, '-', :pair::text, '-a')"
b = "concat('pgb-', :run::text, '-', :client_id::text, '-', :pair::text, '-b')"
out_payload = '{"type": "TransferredOut", "account": "pgb-0-0-a", "to": "pgb-0-0-b", "amount": 3}'
in_payload = '{"type": "TransferredIn", "account": "pgb-0-0-b", "from": "pgb-0-0-a", "amount": 3}'
params = {
    "$1": f"ARRAY[{a}, {b}]",
    "$2": "ARRAY[:v::bigint, :v::bigint]",
    "$3": f"ARRAY[{a}, {b}]",
    "$4": "ARRAY[:v::bigint + 1, :v::bigint + 1]",
    "$5": "ARRAY['TransferSent', 'TransferReceived']",
    "$6": f"ARRAY['{out_payload}', '{in_payload}']",
    "$7": "ARRAY[gen_random_uuid(), gen_random_uuid()]",
    # Metadata: no key/values, one correlation id for both events (execute
    # always sets one), no causation id.
    "$8": "ARRAY['{}', '{}']",
    "$9": "ARRAY[md5(:client_id::text || ':' || :i::text), md5(:client_id::text || ':' || :i::text)]",
    "$10": "ARRAY[NULL::text, NULL::text]",
    # No command id (the load tool's --command-ids measures them).
    "$11": "NULL::text",
    "$12": "NULL::text",
    "$13": "NULL::bigint[]",
    # Schema versions: a transfer's events are at version 1.
    "$14": "ARRAY[1, 1]::bigint[]",
}


def bind(sql, names):
    def sub(m):
        return params[m.group(0)] if m.group(0) in names else m.group(0)

    bound = re.sub(r"\$\d+", sub, sql)
    return " ".join(bound.split()) + ";"


print("\\set pair :i % :k")
print("\\set v :i / :k")
if not append_only:
    print(bind(read_sql, {"$1"}))
print(bind(append_sql, set(params)))
print("\\set i :i + 1")
