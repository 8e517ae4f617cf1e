"""The Lua scripts behind Redis presence (``app/presence_redis.py``), and the keys they touch.

Per channel, both hash-tagged by the channel so that one Redis Cluster shard holds them and a
script may touch both:

* ``switchboard:presence:{C}``, a sorted set: member -> expiry (Redis's clock).
* ``switchboard:presence-users:{C}``, a hash: signed-in user -> how many of the set's members are
  theirs, and ``""`` -> how many are anonymous (no user id is empty). ``presence_stats`` counts
  distinct users with ``HLEN`` (less the ``""`` field), anonymous clients with ``HGET ""``, and
  clients with ``ZCOUNT``, without reading a member. Every script that adds or removes members
  keeps it in step, atomically. (Members an older version added count as clients only until they
  leave: the ``""`` field never goes below zero, it is deleted at zero.)

Cluster-wide, ``switchboard:presence-expiries`` is a sorted set: channel -> a lower bound of its
earliest member expiry. The sweeper reads only the channels due there (one range read per pass),
never every channel every second. It is a key of its own, updated by a separate command, so that
each script touches one channel's slot.
"""

from __future__ import annotations

KEY_PREFIX = "switchboard:presence:"
USERS_PREFIX = "switchboard:presence-users:"
EXPIRIES = "switchboard:presence-expiries"


def key(channel: str) -> str:
    """A channel's presence set, hash-tagged like its history: on Redis Cluster, one shard holds
    everything about a channel."""
    return f"{KEY_PREFIX}{{{channel}}}"


def users_key(channel: str) -> str:
    return f"{USERS_PREFIX}{{{channel}}}"


_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"
# A member is JSON [client, user, info, name] (app/presence.py); "" for anonymous clients and for
# bare ids from older versions, counted under the hash's "" field.
_USERS = """
local function user_of(m)
  local ok, v = pcall(cjson.decode, m)
  if ok and type(v) == 'table' and type(v[2]) == 'string' then return v[2] end
  return ''
end
local function counted(h, m, by)
  local u = user_of(m)
  if redis.call('HINCRBY', h, u, by) <= 0 then redis.call('HDEL', h, u) end
end
local function earliest(z)
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  return first[2] or ''
end
"""
_HEAD = _NOW + _USERS

# KEYS = set, users; ARGV[1] = ttl seconds, ARGV[2..] = members to add or keep alive.
# {live members, the set's earliest expiry (for the expiry index)}.
TOUCH = (
    _HEAD
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) == 1 then counted(KEYS[2], ARGV[i], 1) end
end
local ms = math.ceil(ttl * 2000)
redis.call('PEXPIRE', KEYS[1], ms)
redis.call('PEXPIRE', KEYS[2], ms)
return {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), earliest(KEYS[1])}
"""
)
# KEYS = set: the number of live members.
COUNT = _NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')\n"
# KEYS = set, users; ARGV = members to remove. The live members left.
REMOVE = (
    _HEAD
    + """
for i = 1, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then counted(KEYS[2], ARGV[i], -1) end
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""
)
# KEYS = set: the members whose expiry is still ahead.
LIST = _NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')\n"
# KEYS = set, ARGV = cursor, count: {next cursor, live members of this batch}.
PAGE = (
    _NOW
    + """
local found = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local live = {}
for i = 1, #found[2], 2 do
  if tonumber(found[2][i + 1]) > now then live[#live + 1] = found[2][i] end
end
return {found[1], live}
"""
)
# KEYS = set, users: {live members, distinct signed-in users among them, anonymous ones}. Members that expired
# but are not swept yet (a dead instance's, for a sweep round) are the only ones read.
STATS = (
    _HEAD
    + """
local clients = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local users = redis.call('HLEN', KEYS[2])
local anonymous = tonumber(redis.call('HGET', KEYS[2], '') or '0')
if anonymous > 0 then users = users - 1 end
if redis.call('ZCOUNT', KEYS[1], '-inf', now) > 0 then
  local dead = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    local u = user_of(m)
    dead[u] = (dead[u] or 0) + 1
  end
  for u, n in pairs(dead) do
    if u == '' then
      anonymous = math.max(0, anonymous - n)
    else
      local held = redis.call('HGET', KEYS[2], u)
      if held and tonumber(held) <= n then users = users - 1 end
    end
  end
end
return {clients, users, math.min(anonymous, clients)}
"""
)
# KEYS = set, users: {members whose expiry passed (now removed), members left, earliest expiry}.
SWEEP = (
    _HEAD
    + """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, m in ipairs(gone) do counted(KEYS[2], m, -1) end
end
local left = redis.call('ZCARD', KEYS[1])
if left == 0 then redis.call('DEL', KEYS[2]) end
return {gone, left, earliest(KEYS[1])}
"""
)
# KEYS = expiry index, ARGV = most channels: {now, {channel, score, ...} of those due now}; now as a
# string, since Redis truncates a Lua number in a reply to an integer (the sweep lag needs the rest).
DUE = (
    _NOW
    + "return {tostring(now), redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[1])}\n"
)
# KEYS = expiry index, ARGV = channel, the score the sweeper read: forget an emptied channel,
# unless a join has indexed it again meanwhile (with a later score).
FORGET = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"""
