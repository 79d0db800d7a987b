"""The least a Redis ACL user needs to run a worker, and segstream's tools, on one app's keys.

Every key segstream writes starts with ``<app_id>:`` (:func:`~segstream.stream.state.keys.
state_prefix`): user hashes and outboxes, drift state. The commands are those the code and its
Lua scripts send (``state/lua/*.lua``, ``drift/lua/*.lua``, the population scripts of
``state/populations.py``), the replica ``WAIT`` and its marker (``state/store.py``), the
start-up replica check (``state/replicas.py``) and a Redis Cluster client's own discovery;
Redis checks the commands a script calls against the caller's ACL too.
``docs/operations.md`` lists them (a unit test checks it against this list); the secured local
stack creates its user from here; integration tests run workers under exactly these rules on
a single server and on a Redis Cluster with ``SEGSTREAM_REDIS_MIN_REPLICAS=1`` through a
failover, and find nothing refused in any server's ``ACL LOG``.
"""

from __future__ import annotations

__all__ = ["WORKER_COMMANDS", "worker_acl_rules"]

WORKER_COMMANDS: tuple[tuple[str, str], ...] = (
    ("ping", "start-up and readiness checks"),
    ("evalsha", "every state change: apply.lua, settle.lua, the population scripts, drift"),
    ("script|load", "loading those scripts (again after a server restart: NOSCRIPT)"),
    ("hget", "inside the scripts"),
    (
        "hmget",
        "inside the scripts; drift state; `segstream verify`; "
        "`segstream deliver`'s backfill floors",
    ),
    ("hset", "inside the scripts; `deliver --backfill`'s floors"),
    ("exists", "inside the scripts: a new user counted in the populations"),
    ("hsetnx", "inside apply.lua"),
    ("hexists", "inside apply.lua: is an order line's order row the user's (change capture)"),
    ("sadd", "a product's buyers (change capture's product catalogue)"),
    ("smembers", "a corrected product's buyers, to re-derive them (change capture)"),
    ("hincrby", "inside the scripts (counters, fences, drift version)"),
    ("hkeys", "inside the scripts: the order-id window, drift's sweep; `drift show`'s epochs"),
    (
        "hdel",
        "inside the scripts: forgotten order ids, expired drift writers and epochs; "
        "`segstream deliver` dropping the floor of a user who left",
    ),
    ("rpush", "the outbox, inside settle.lua"),
    ("llen", "the outbox, inside the scripts"),
    ("lrange", "the outbox: inside the scripts, `GET /users/{id}`"),
    ("lrem", "clearing a published change from its outbox"),
    (
        "hgetall",
        "`GET /users/{id}`, `segstream segment`, drift state, population counters, "
        "`deliver --backfill`",
    ),
    ("time", "the server's clock, inside the scripts"),
    ("scan", "`reassign`, namespace drop, `segstream populations --recount`, `deliver --backfill`"),
    ("unlink", "dropping an app's keys (`segstream demo` reset, the bench's clean-up)"),
    (
        "del",
        "`segstream populations --recount`; a user leaving (`settle`'s erasure); "
        "`deliver --backfill` replacing its floors",
    ),
    ("memory|usage", "`segstream bench stream`'s bytes per user only"),
    ("set", "the WAIT marker: one write per primary so WAIT counts this step's offset"),
    ("wait", "with SEGSTREAM_REDIS_MIN_REPLICAS > 0: replicas acknowledge a step's writes"),
    ("info", "the start-up check that each primary has the replicas MIN_REPLICAS asks"),
    ("cluster|slots", "a Redis Cluster client's discovery and slot-map refreshes"),
    ("command", "a Redis Cluster client's table of where each command's keys are"),
)
"""``(command, why)`` for every command segstream sends; lower-case, as ACL rules spell them."""


def worker_acl_rules(app_id: str) -> list[str]:
    """The ``ACL SETUSER`` rules (after the user's name) that confine a user to ``app_id``'s
    keys and segstream's commands, with no Pub/Sub channel; a password rule comes on top."""
    glob = "".join("\\" + c if c in "*?[]\\" else c for c in app_id)
    return [
        "resetkeys",
        f"~{glob}:*",
        "resetchannels",
        "-@all",
        *(f"+{command}" for command, _ in WORKER_COMMANDS),
    ]
