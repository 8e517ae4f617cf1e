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
# KEYS: meta, stream. ARGV: epoch if new, meta ttl, since, count (0 = all).
HISTORY_SCRIPT = (
    _ENSURE_META
    + """
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
local since = tonumber(ARGV[3])
local entries = {}
local count = tonumber(ARGV[4])
if since < top then
  if count > 0 then
    entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', count)
  else
    entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')
  end
end
return {epoch, top, entries}
"""
)


def history_keys(channel: str) -> tuple[str, str]:
    return f"sb:{{{channel}}}:meta", f"sb:{{{channel}}}:history"


def idempotency_key(channel: str, key: str) -> str:
    """Beside the channel's history keys (same hash tag), so one script sees all three."""
    return f"sb:{{{channel}}}:idem:{key}"
