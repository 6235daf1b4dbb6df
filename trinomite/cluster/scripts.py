"""The Lua scripts that keep versions inside Redis, and the reserved keys they use.

Theory of operation
-------------------
Every versioned write or read is one ``EVAL``, so that comparing a stored
version and applying the write happen atomically on each replica.  Versions
travel as 20-digit zero-padded decimals (``stamp``) and are compared as
strings: Lua's numbers are doubles and cannot hold a 64-bit version.

Two kinds of metadata, both under the reserved prefix that clients cannot
name (``protocol.reserved``):

``__trinomite:v:<key>`` (a string, ``"1:<version>:<d>"``)
    the last whole-key write: a ``SET`` (d = 0) or a ``DEL`` (d = 1, a
    tombstone).  A ``SET`` with a TTL gives the metadata the key's TTL plus
    the grace, so it outlives the value by the grace.

``__trinomite:f:<key>`` (a hash, element -> ``"1:<version>:<d>"``)
    one entry per hash field, set member or sorted-set member written by a
    versioned element command (d = 1: the element was removed).

The rules the scripts apply, per replica:

* A whole-key write at version V is skipped if the key's metadata is newer.
  A ``SET`` then drops the element metadata (the string replaced the
  collection).  A ``DEL`` removes the elements whose version is at most V
  and keeps the ones written after it (last write wins per element);
  element metadata at or below V goes, the tombstone at V covers it.
* An element write at V is skipped for an element whose own metadata is
  newer, or when the whole key was written after V.  Otherwise it is
  applied (``HSET``/``HDEL``/``SADD``/``SREM``/``ZADD``/``ZREM`` of that one
  element) and the element's metadata is set to V, a tombstone for a
  removal.  A conditional ``ZADD`` (``NX``/``XX``/``GT``/``LT``) stamps only
  the elements it changed.  The reply adds up the per-element replies, so
  an element skipped as superseded counts as not added or not removed.
* Tombstones are not expired by Redis: ``COLLECT_SCRIPT`` removes the ones
  older than the grace, a slice of the keyspace per call, and counts them.
"""

from __future__ import annotations

from ..protocol.reserved import RESERVED_PREFIX

__all__ = [
    "COLLECT_SCRIPT",
    "ELEMENT_READ_SCRIPT",
    "ELEMENT_WRITE_SCRIPT",
    "READ_SCRIPT",
    "WIDTH",
    "WRITE_SCRIPT",
    "elements_key",
    "meta_key",
    "stamp",
]

#: Digits in a stamped version.
WIDTH = 20


def stamp(version: int) -> bytes:
    return b"%0*d" % (WIDTH, version)


def meta_key(key: bytes) -> bytes:
    """Where the whole-key version of ``key`` is kept."""
    return RESERVED_PREFIX + b"v:" + key


def elements_key(key: bytes) -> bytes:
    """Where the per-element versions of ``key`` are kept."""
    return RESERVED_PREFIX + b"f:" + key


# KEYS[1] the key, KEYS[2] its metadata, KEYS[3] its element metadata;
# ARGV[1] the version, ARGV[2] the kind of write ("1" a DEL, "0" a SET, "n" or
# "x" a SET NX or XX, stamped only if it applied), ARGV[3] the grace (ms),
# ARGV[4..] the command (SET ... or DEL key).
WRITE_SCRIPT = b"""local v = ARGV[1]
local kind = ARGV[2]
local m = redis.call('GET', KEYS[2])
if m and string.sub(m, 3, 22) > v then
  if kind == '1' then return 0 end
  for i = 7, #ARGV do
    if string.upper(ARGV[i]) == 'GET' then return redis.call('GET', KEYS[1]) end
  end
  if kind == '0' then return {ok='OK'} end
  return false
end
if kind == 'n' or kind == 'x' then
  if (kind == 'n') == (redis.call('EXISTS', KEYS[1]) == 1) then
    return redis.call(unpack(ARGV, 4))
  end
  kind = '0'
end
local reply
if kind == '1' then
  local kept = {}
  local any = false
  local fm = redis.call('HGETALL', KEYS[3])
  for i = 1, #fm, 2 do
    if string.sub(fm[i + 1], 3, 22) > v then
      kept[fm[i]] = true
      any = true
    else
      redis.call('HDEL', KEYS[3], fm[i])
    end
  end
  if any then
    local t = redis.call('TYPE', KEYS[1])['ok']
    local all, del = {}, nil
    if t == 'hash' then all = redis.call('HKEYS', KEYS[1]); del = 'HDEL'
    elseif t == 'set' then all = redis.call('SMEMBERS', KEYS[1]); del = 'SREM'
    elseif t == 'zset' then all = redis.call('ZRANGE', KEYS[1], 0, -1); del = 'ZREM' end
    reply = 0
    for _, e in ipairs(all) do
      if not kept[e] then reply = 1; redis.call(del, KEYS[1], e) end
    end
  else
    reply = redis.call('DEL', KEYS[1])
  end
else
  reply = redis.call(unpack(ARGV, 4))
  redis.call('DEL', KEYS[3])
end
redis.call('SET', KEYS[2], '1:' .. v .. ':' .. kind)
if kind ~= '1' then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl + tonumber(ARGV[3])) end
end
return reply
"""

READ_SCRIPT = b"""return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""

# KEYS as WRITE_SCRIPT; ARGV[1] the version, ARGV[2] the grace (ms), ARGV[3]
# the operation (hset hmset hdel sadd srem zadd zrem), ARGV[4] the number n of
# ZADD option words, ARGV[5..4+n] those words, then the elements (field value
# pairs for hset/hmset, score member pairs for zadd, else members).
ELEMENT_WRITE_SCRIPT = b"""local v = ARGV[1]
local op = ARGV[3]
local n = tonumber(ARGV[4])
local done = 0
local m = redis.call('GET', KEYS[2])
if not (m and string.sub(m, 3, 22) > v) then
  local step = 1
  if op == 'hset' or op == 'hmset' or op == 'zadd' then step = 2 end
  local conditional = false
  for i = 5, 4 + n do
    local o = string.upper(ARGV[i])
    if o == 'NX' or o == 'XX' or o == 'GT' or o == 'LT' then conditional = true end
  end
  for i = 5 + n, #ARGV, step do
    local e = ARGV[i]
    if op == 'zadd' then e = ARGV[i + 1] end
    local fm = redis.call('HGET', KEYS[3], e)
    if not (fm and string.sub(fm, 3, 22) > v) then
      local d, mark = '0', true
      if op == 'hset' or op == 'hmset' then
        done = done + redis.call('HSET', KEYS[1], e, ARGV[i + 1])
      elseif op == 'hdel' then
        done = done + redis.call('HDEL', KEYS[1], e); d = '1'
      elseif op == 'sadd' then
        done = done + redis.call('SADD', KEYS[1], e)
      elseif op == 'srem' then
        done = done + redis.call('SREM', KEYS[1], e); d = '1'
      elseif op == 'zrem' then
        done = done + redis.call('ZREM', KEYS[1], e); d = '1'
      else
        local before = redis.call('ZSCORE', KEYS[1], e)
        local call = {'ZADD', KEYS[1]}
        for j = 5, 4 + n do call[#call + 1] = ARGV[j] end
        call[#call + 1] = ARGV[i]
        call[#call + 1] = e
        done = done + redis.call(unpack(call))
        if conditional then mark = redis.call('ZSCORE', KEYS[1], e) ~= before end
      end
      if mark then redis.call('HSET', KEYS[3], e, '1:' .. v .. ':' .. d) end
    end
  end
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl + tonumber(ARGV[2]))
  elseif ttl == -1 then redis.call('PERSIST', KEYS[3]) end
end
if op == 'hmset' then return {ok='OK'} end
return done
"""

# KEYS as WRITE_SCRIPT; ARGV[1] the element's type (h s z), ARGV[2] the element.
ELEMENT_READ_SCRIPT = b"""local t, e = ARGV[1], ARGV[2]
local value = false
if t == 'h' then value = redis.call('HGET', KEYS[1], e)
elseif t == 's' then
  if redis.call('SISMEMBER', KEYS[1], e) == 1 then value = '1' end
else value = redis.call('ZSCORE', KEYS[1], e) end
return {value, redis.call('HGET', KEYS[3], e), redis.call('GET', KEYS[2])}
"""

# ARGV[1] a SCAN cursor, ARGV[2] its COUNT, ARGV[3] the oldest stamp kept:
# tombstones stamped below it are removed.  Returns {next cursor, removed}.
COLLECT_SCRIPT = (
    b"""local r = redis.call('SCAN', ARGV[1], 'MATCH', '"""
    + RESERVED_PREFIX
    + b"""[vf]:*', 'COUNT', ARGV[2])
local oldest = ARGV[3]
local removed = 0
local at = #'"""
    + RESERVED_PREFIX
    + b"""' + 1
for _, k in ipairs(r[2]) do
  if string.sub(k, at, at) == 'v' then
    local m = redis.call('GET', k)
    if m and string.sub(m, -2) == ':1' and string.sub(m, 3, 22) < oldest then
      redis.call('DEL', k)
      removed = removed + 1
    end
  else
    local fm = redis.call('HGETALL', k)
    for i = 1, #fm, 2 do
      local m = fm[i + 1]
      if string.sub(m, -2) == ':1' and string.sub(m, 3, 22) < oldest then
        redis.call('HDEL', k, fm[i])
        removed = removed + 1
      end
    end
  end
end
return {r[1], removed}
"""
)
