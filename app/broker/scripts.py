"""Channel history in Redis: the Lua scripts and key names the Redis broker uses.

Per channel, two keys share a ``{channel}`` hash tag (one Redis Cluster slot):

* ``sb:{channel}:meta``, a hash: the epoch (``e``) and the last offset (``o``);
* ``sb:{channel}:history``, a stream of envelopes with IDs ``<offset>-0``, trimmed to a MAXLEN.

Both expire a while after the channel's last publish (``HistoryOptions``).
"""

from __future__ import annotations

# The meta hash holds the epoch ("e") and the last offset ("o"). A meta hash that is missing (never
# written, expired, or lost with a Redis restart) gets a new epoch, and any stream left behind is
# dropped, so offsets and stream IDs restart together. Stream IDs are "<offset>-0".
_ENSURE_META = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
"""
# KEYS: meta, stream[, idempotency]. ARGV: epoch if new, meta ttl, channel, header, frame, size,
# ttl[, idempotency ttl in ms]. With an idempotency key already set, nothing is published: the
# first attempt's position is returned. Checked and set in the same atomic step as the publish.
PUBLISH_SCRIPT = (
    _ENSURE_META
    + """
if KEYS[3] then
  local prev = redis.call('GET', KEYS[3])
  if prev then
    local space = string.find(prev, ' ', 1, true)
    return {tonumber(string.sub(prev, 1, space - 1)), string.sub(prev, space + 1)}
  end
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local frame = ARGV[5]
local sep = ','
if frame == '{}' then sep = '' end
frame = string.sub(frame, 1, -2) .. sep .. '"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
local envelope = ARGV[4] .. ' ' .. offset .. ' ' .. epoch .. '\\n' .. frame
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[6], offset .. '-0', 'e', envelope)
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], envelope)
if KEYS[3] then redis.call('SET', KEYS[3], offset .. ' ' .. epoch, 'PX', ARGV[8]) end
return {offset, epoch}
"""
)
# A channel without history, with an idempotency key. KEYS: idempotency. ARGV: channel, envelope,
# idempotency ttl in ms.
PUBLISH_ONCE_SCRIPT = """
if not redis.call('GET', KEYS[1]) then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  redis.call('SET', KEYS[1], '0 ', 'PX', ARGV[3])
end
return {0, ''}
"""
# KEYS: meta, stream. ARGV: since, count (0 = no limit), byte budget. Read-only: a channel with no
# meta hash has no epoch yet, and reading it must not create one (a join leaves no key behind). The
# stream is read in slices so that a long history is never copied whole to stop at the budget; the
# first entry is always returned, so a reader makes progress whatever the budget.
HISTORY_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then return {'', 0, {}} end
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
local since = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local entries = {}
local start = (since + 1) .. '-0'
while since < top do
  local want = 64
  if count > 0 then want = math.min(want, count - #entries) end
  if want <= 0 then break end
  local slice = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', want)
  for _, entry in ipairs(slice) do
    local size = string.len(entry[2][2])
    if #entries > 0 and size > budget then return {epoch, top, entries} end
    budget = budget - size
    entries[#entries + 1] = entry
  end
  if #slice < want then break end
  start = '(' .. slice[#slice][1]
end
return {epoch, top, entries}
"""


# Redis Cluster: the same scripts publishing to the channel's shard only (SPUBLISH, Redis 7+); the
# channel hashes like its keys' {channel} tag, so the script stays within one slot.
SHARDED_SCRIPTS = {
    script: script.replace("'PUBLISH'", "'SPUBLISH'") for script in (PUBLISH_SCRIPT, PUBLISH_ONCE_SCRIPT)
}


def history_keys(channel: str) -> tuple[str, str]:
    return f"sb:{{{channel}}}:meta", f"sb:{{{channel}}}:history"


def idempotency_key(channel: str, key: str) -> str:
    """Beside the channel's history keys (same hash tag), so one script sees all three."""
    return f"sb:{{{channel}}}:idem:{key}"
