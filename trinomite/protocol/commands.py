"""The Redis command table: one row per command trinomite understands.

Theory of operation
-------------------
Every decision the node makes about a request starts here: is the command
known, is its argument count right, which arguments are keys, is it a read
or a write, and how is it routed (dynomite.md §8.1).  The table is data (a
text block parsed once at import, one row per command) so it can be read
and reviewed as a whole, like twemproxy's ``MSG_TYPE_CODEC``::

    name    arity  keys   access  route

* ``arity`` follows Redis's COMMAND convention: ``n`` exactly n arguments
  (command name included), ``-n`` at least n.
* ``keys``: ``-`` none; ``i`` one key at index i; ``i:j[:step]`` keys from
  i to j (j negative counts from the end); ``nkI`` a numkeys argument at
  index I followed by that many keys (EVAL, ZUNION, SINTERCARD);
  ``d1nk2`` a destination key at 1 then numkeys at 2 (ZUNIONSTORE);
  ``1+store`` key 1 plus the key after a STORE/STOREDIST option (SORT,
  GEORADIUS).
* ``access``: ``r`` read, ``w`` write, ``rs`` read unless a STORE option
  makes it a write, ``-`` not applicable.
* ``route`` (what the coordinator does with it): ``key`` token owner of the
  key; ``rack`` own-rack owner only; ``scatter-array`` / ``scatter-sum`` /
  ``scatter-ok`` split per owner and merged (MGET, DEL/EXISTS, MSET);
  ``same`` several keys that must share one owner, else a clear error;
  ``all`` every node (SCRIPT); ``local`` the local datastore only (INFO,
  KEYS, SCAN, ...); ``node`` answered by the node itself.

Differences from Dynomite (deliberate, see docs/redis-commands.md): TTL and
PFCOUNT are reads and SUNIONSTORE/ZINTERSTORE/ZUNIONSTORE writes (Dynomite
has these flags swapped); multi-key commands check that their keys share an
owner instead of silently routing by the first key; UNLINK, TOUCH, HSTRLEN,
GETEX, GETDEL and more are supported; unknown commands get ``-ERR`` and the
connection stays open.
"""

from __future__ import annotations

import enum

import attrs

__all__ = [
    "BY_BYTES",
    "CHECKED_SUBCOMMANDS",
    "COMMANDS",
    "GUARDED_COMMANDS",
    "LISTING_COMMANDS",
    "Access",
    "CommandSpec",
    "Route",
    "arity_error",
    "extract_keys",
    "lookup",
    "unknown_command_error",
    "unsupported_reason",
]


class Route(enum.Enum):
    KEY = "key"
    RACK = "rack"
    SCATTER_ARRAY = "scatter-array"
    SCATTER_SUM = "scatter-sum"
    SCATTER_OK = "scatter-ok"
    SAME = "same"
    ALL = "all"
    LOCAL = "local"
    NODE = "node"


class Access(enum.Enum):
    READ = "r"
    WRITE = "w"
    READ_UNLESS_STORE = "rs"
    NONE = "-"


#: Container commands whose subcommands are checked before forwarding: any
#: other subcommand is refused as unsupported.
CHECKED_SUBCOMMANDS: dict[str, frozenset[bytes]] = {
    "config": frozenset({b"get", b"set", b"rewrite", b"resetstat"}),
    "script": frozenset({b"load", b"exists", b"flush", b"kill"}),
}
#: Commands the dispatcher hands to ``guard.CommandGuard`` (server state: see there).
GUARDED_COMMANDS = frozenset({"config", "script", "slaveof", "replicaof", "info"})
#: Commands whose replies list keys: reserved keys are filtered out (``reserved``).
LISTING_COMMANDS = frozenset({"keys", "scan", "randomkey"})


@attrs.frozen
class CommandSpec:
    name: str
    arity: int
    keys: str
    access: Access
    route: Route
    #: Position in the table (indexes per-command statistics).
    index: int = 0
    #: Argument-count bounds derived from ``arity`` (for a one-comparison check).
    min_args: int = attrs.field(init=False)
    max_args: int = attrs.field(init=False)
    #: True when a request needs no check beyond arity before it is routed.
    plain: bool = attrs.field(init=False)
    #: One key, and routed by it alone (the coordinator's fast lane; SMEMBERS
    #: is not, since a safe quorum rewrites it).
    one_key: bool = attrs.field(init=False)
    #: ``is_write`` when it does not depend on the arguments, else None.
    writes: bool | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        exact = self.arity > 0
        object.__setattr__(self, "min_args", self.arity if exact else -self.arity)
        object.__setattr__(self, "max_args", self.arity if exact else 1 << 30)
        plain = (
            self.route is not Route.NODE
            and self.name not in GUARDED_COMMANDS
            and self.name not in LISTING_COMMANDS
        )
        object.__setattr__(self, "plain", plain)
        one_key = self.keys == "1" and self.route is Route.KEY and self.name != "smembers"
        object.__setattr__(self, "one_key", one_key)
        static = None if self.access is Access.READ_UNLESS_STORE else self.access is Access.WRITE
        object.__setattr__(self, "writes", static)

    def arity_ok(self, argc: int) -> bool:
        return self.min_args <= argc <= self.max_args

    def is_write(self, args: list[bytes]) -> bool:
        if self.access is Access.WRITE:
            return True
        if self.access is Access.READ_UNLESS_STORE:
            return _store_index(args) is not None
        return False


_TABLE = """
# strings
get 2 1 r key
set -3 1 w key
setnx 3 1 w key
setex 4 1 w key
psetex 4 1 w key
getset 3 1 w key
getdel 2 1 w key
getex -2 1 w key
append 3 1 w key
incr 2 1 w key
incrby 3 1 w key
incrbyfloat 3 1 w key
decr 2 1 w key
decrby 3 1 w key
strlen 2 1 r key
getrange 4 1 r key
substr 4 1 r key
setrange 4 1 w key
getbit 3 1 r key
setbit 4 1 w key
bitcount -2 1 r key
bitpos -3 1 r key
bitfield -2 1 w key
bitfield_ro -2 1 r key
bitop -4 2:-1 w same
mget -2 1:-1 r scatter-array
mset -3 1:-1:2 w scatter-ok
msetnx -3 1:-1:2 w same
lcs -3 1:2 r same
# keys
del -2 1:-1 w scatter-sum
unlink -2 1:-1 w scatter-sum
exists -2 1:-1 r scatter-sum
touch -2 1:-1 r scatter-sum
expire -3 1 w key
expireat -3 1 w key
pexpire -3 1 w key
pexpireat -3 1 w key
persist 2 1 w key
ttl 2 1 r key
pttl 2 1 r key
expiretime 2 1 r key
pexpiretime 2 1 r key
type 2 1 r key
dump 2 1 r key
restore -4 1 w key
rename 3 1:2 w same
renamenx 3 1:2 w same
copy -3 1:2 w same
sort -2 1+store rs same
sort_ro -2 1 r key
# hashes
hget 3 1 r key
hset -4 1 w key
hsetnx 4 1 w key
hmget -3 1 r key
hmset -4 1 w key
hdel -3 1 w key
hexists 3 1 r key
hlen 2 1 r key
hincrby 4 1 w key
hincrbyfloat 4 1 w key
hstrlen 3 1 r key
hrandfield -2 1 r key
hgetall 2 1 r rack
hkeys 2 1 r rack
hvals 2 1 r rack
hscan -3 1 r rack
# lists
lpush -3 1 w key
rpush -3 1 w key
lpushx -3 1 w key
rpushx -3 1 w key
lpop -2 1 w key
rpop -2 1 w key
llen 2 1 r key
lindex 3 1 r key
linsert 5 1 w key
lrange 4 1 r key
lrem 4 1 w key
lset 4 1 w key
ltrim 4 1 w key
lpos -3 1 r key
rpoplpush 3 1:2 w same
lmove 5 1:2 w same
# sets
sadd -3 1 w key
srem -3 1 w key
scard 2 1 r key
sismember 3 1 r key
smismember -3 1 r key
smembers 2 1 r key
spop -2 1 w key
srandmember -2 1 r key
smove 4 1:2 w same
sdiff -2 1:-1 r same
sdiffstore -3 1:-1 w same
sinter -2 1:-1 r same
sinterstore -3 1:-1 w same
sintercard -3 nk1 r same
sunion -2 1:-1 r same
sunionstore -3 1:-1 w same
sscan -3 1 r rack
# sorted sets
zadd -4 1 w key
zrem -3 1 w key
zcard 2 1 r key
zcount 4 1 r key
zincrby 4 1 w key
zlexcount 4 1 r key
zrange -4 1 r key
zrangebylex -4 1 r key
zrangebyscore -4 1 r key
zrank -3 1 r key
zrevrank -3 1 r key
zremrangebylex 4 1 w key
zremrangebyrank 4 1 w key
zremrangebyscore 4 1 w key
zrevrange -4 1 r key
zrevrangebylex -4 1 r key
zrevrangebyscore -4 1 r key
zscore 3 1 r key
zmscore -3 1 r key
zpopmin -2 1 w key
zpopmax -2 1 w key
zrandmember -2 1 r key
zrangestore -5 1:2 w same
zinterstore -4 d1nk2 w same
zunionstore -4 d1nk2 w same
zdiffstore -4 d1nk2 w same
zinter -3 nk1 r same
zunion -3 nk1 r same
zdiff -3 nk1 r same
zscan -3 1 r rack
# hyperloglog
pfadd -2 1 w key
pfcount -2 1:-1 r same
pfmerge -2 1:-1 w same
# geo
geoadd -5 1 w key
geodist -4 1 r key
geohash -2 1 r key
geopos -2 1 r key
georadius -6 1+store rs same
georadiusbymember -5 1+store rs same
georadius_ro -6 1 r key
georadiusbymember_ro -5 1 r key
geosearch -7 1 r key
geosearchstore -8 1:2 w same
# scripting
eval -3 nk2 w same
evalsha -3 nk2 w same
eval_ro -3 nk2 r same
evalsha_ro -3 nk2 r same
script -2 - - all
# RedisJSON (forwarded; the datastore must load the module)
json.set -4 1 w key
json.get -2 1 r key
json.del -2 1 w key
json.type -2 1 r key
json.mget -3 1:-2 r same
json.arrappend -4 1 w key
json.arrinsert -5 1 w key
json.arrlen -2 1 r key
json.objkeys -2 1 r key
json.objlen -2 1 r key
# local datastore only, as in Dynomite
info -1 - - local
keys 2 - r local
scan -2 - r local
dbsize 1 - r local
config -2 - - local
time 1 - r local
randomkey 1 - r local
slaveof 3 - - local
replicaof 3 - - local
# answered by the node itself
ping -1 - - node
echo 2 - - node
quit -1 - - node
command -1 - - node
client -2 - - node
hello -1 - - node
select 2 - - node
auth -2 - - node
dyno_config:conn_consistency 2 - - node
"""

_UNSUPPORTED_GROUPS = {
    "transactions cannot span the nodes of a Dynamo-style cluster": (
        "multi exec discard watch unwatch"
    ),
    "pub/sub is not replicated by trinomite": (
        "subscribe unsubscribe psubscribe punsubscribe publish pubsub ssubscribe "
        "sunsubscribe spublish"
    ),
    "blocking commands would hold a shared datastore connection": (
        "blpop brpop brpoplpush blmove blmpop bzpopmin bzpopmax bzmpop wait waitaof"
    ),
    "server administration is not proxied; talk to the datastore directly": (
        "flushall flushdb save bgsave bgrewriteaof shutdown monitor debug sync psync "
        "replconf slowlog latency memory acl module failover cluster readonly readwrite "
        "swapdb move migrate object lastsave lolwut role function fcall fcall_ro reset"
    ),
    "streams are not supported by trinomite yet": (
        "xadd xrange xrevrange xlen xread xreadgroup xgroup xack xpending xclaim "
        "xautoclaim xdel xtrim xinfo xsetid"
    ),
}


def _parse_table(text: str) -> dict[str, CommandSpec]:
    table: dict[str, CommandSpec] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, arity, keys, access, route = line.split()
        table[name] = CommandSpec(
            name, int(arity), keys, Access(access), Route(route), index=len(table)
        )
    return table


COMMANDS: dict[str, CommandSpec] = _parse_table(_TABLE)
_UNSUPPORTED: dict[str, str] = {
    name: reason for reason, names in _UNSUPPORTED_GROUPS.items() for name in names.split()
}
# Lookup by the raw bytes a client sent, in the two common spellings, so the
# hot path does not upper/lower-case every command name.
BY_BYTES: dict[bytes, CommandSpec] = {}
for _spec in COMMANDS.values():
    BY_BYTES[_spec.name.encode()] = _spec
    BY_BYTES[_spec.name.upper().encode()] = _spec


def lookup(name: bytes) -> CommandSpec | None:
    """The spec for a command name in any letter case, or None."""
    spec = BY_BYTES.get(name)
    if spec is None:
        spec = BY_BYTES.get(name.lower())
    return spec


def unsupported_reason(name: bytes) -> str | None:
    """Why a known Redis command is refused, or None if it is not one of those."""
    return _UNSUPPORTED.get(name.decode("latin-1").lower())


def _store_index(args: list[bytes]) -> int | None:
    for i in range(2, len(args) - 1):
        if args[i].upper() in (b"STORE", b"STOREDIST"):
            return i + 1
    return None


def extract_keys(spec: CommandSpec, args: list[bytes]) -> list[bytes] | None:
    """The key arguments of a request whose arity was already checked.

    Returns None when a numkeys argument is malformed or out of range; the
    datastore then produces Redis's own error for it.
    """
    rule = spec.keys
    if rule == "-":
        return []
    if rule == "1":
        return [args[1]]
    if rule == "1+store":
        index = _store_index(args)
        return [args[1]] if index is None else [args[1], args[index]]
    if rule.startswith(("nk", "d1nk")):
        at = int(rule[-1])
        try:
            count = int(args[at])
        except ValueError:
            return None
        first = at + 1
        if count < 0 or first + count > len(args):
            return None
        keys = args[first : first + count]
        return [args[1], *keys] if rule.startswith("d1") else keys
    parts = [int(p) for p in rule.split(":")]
    first, last = parts[0], parts[1] if len(parts) > 1 else parts[0]
    step = parts[2] if len(parts) > 2 else 1
    stop = len(args) + last + 1 if last < 0 else last + 1
    if step > 1 and (stop - first) % step:
        return None
    return args[first:stop:step]


def arity_error(name: str) -> str:
    """Redis's message for a wrong argument count (``name`` in lower case)."""
    return f"ERR wrong number of arguments for '{name}' command"


def unknown_command_error(args: list[bytes]) -> bytes:
    """Redis 7's message for an unknown command, byte for byte.

    Built from bytes as Redis does (``%.128s`` of the name, ``'%.*s' `` per
    argument with a 128-byte budget): each argument stops at a NUL byte,
    truncation counts bytes, and CR/LF become spaces.
    """
    shown = b""
    for arg in args[1:]:
        if len(shown) >= 128:
            break
        shown += b"'" + arg.split(b"\0", 1)[0][: 128 - len(shown)] + b"' "
    name = args[0].split(b"\0", 1)[0][:128]
    message = b"ERR unknown command '" + name + b"', with args beginning with: " + shown
    return message.replace(b"\r", b" ").replace(b"\n", b" ")
