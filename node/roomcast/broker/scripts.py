"""Lua scripts run inside Redis, so that what must happen together happens atomically.

Keys of one room share a hash tag (``{room}``), so each script touches a single slot and stays
valid on Redis Cluster. Room names are validated by the protocol (no quotes or backslashes) and
so are usernames, which is why the scripts may splice them into JSON.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Final


@functools.lru_cache(maxsize=8192)
def room_keys(room: str) -> tuple[bytes, bytes, bytes, bytes]:
    """seq (offset counter), epoch, history list (newest first), presence hash."""
    tag = f"rc:{{{room}}}"
    return (
        f"{tag}:seq".encode(),
        f"{tag}:epoch".encode(),
        f"{tag}:history".encode(),
        f"{tag}:presence".encode(),
    )


@functools.lru_cache(maxsize=8192)
def history_bytes_key(room: str) -> bytes:
    """The byte count of the room's history list (kept beside it, with the same lifetime)."""
    return f"rc:{{{room}}}:bytes".encode()


def room_rate_key(room: str) -> bytes:
    """The room's cluster-wide message bucket: in the room's slot, beside its other keys."""
    return f"rc:{{{room}}}:rate".encode()


@functools.lru_cache(maxsize=8192)
def client_rate_key(owner: str, kind: str) -> bytes:
    """One of an owner's cluster-wide buckets (owner ``sub:alice``, kind ``msg``): tagged by the
    owner, so that owners spread over a cluster's slots and one owner's buckets share one (a
    message charges two of them in one script)."""
    return f"rc:rate:{{{owner}}}:{kind}".encode()


def ban_keys(room: str, user: str) -> tuple[bytes, bytes, bytes]:
    """This user's ban (a string with a TTL: a join checks it), the room's bans by expiry (zset
    user -> until ms) and their reasons (hash): all in the room's slot."""
    tag = f"rc:{{{room}}}"
    return f"{tag}:ban:{user}".encode(), f"{tag}:bans".encode(), f"{tag}:ban_reasons".encode()


# The active rooms, for the paged listing (GET /api/rooms): every room name with a score of 0
# (paged by name with ZRANGEBYLEX), and beside it the time (µs, the room's shard clock) of its
# latest join, so that a room is forgotten only if nobody joined since it was seen empty.
ROOMS_INDEX: Final = b"rc:{index}:rooms"
ROOMS_JOINED: Final = b"rc:{index}:joined"


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    # Hashed once here: EVALSHA sends it with every chat message.
    sha: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest().encode())


# Redis checks a script's commands one by one as it runs them and undoes none: a script that
# wrote its keys and was then refused its PUBLISH (the nodes' user stripped of ``publish`` or of
# the room's channel: Redis 7 gives a new user no channel unless told ``&*``) kept its writes
# while the node told the sender ``unavailable``; the message reached every member with the next
# one (its gap filled from history). These scripts ask first and refuse before they write. Redis
# before 7 has no redis.acl_check_cmd: there the check is skipped. ``_sharded`` turns the
# command asked about into SPUBLISH with the rest.
_MAY_PUBLISH: Final = """\
if redis.acl_check_cmd and not redis.acl_check_cmd('PUBLISH', ARGV[1], '') then
  return redis.error_reply('NOPERM this user may not publish to ' .. ARGV[1] .. ': nothing done')
end
"""


# KEYS: seq, epoch, history, history bytes. ARGV: channel, envelope head, json prefix, history
# size, history ttl (s), meta ttl (s), epoch candidate, history byte budget, deadline (ms, Redis's
# clock). Past its deadline it does nothing and answers {0, ''}: the node has given up on it (or
# will, see roomcast.broker.deadline), so a late run (a stalled Redis waking up) must not publish.
# Every INCR is paired with one LPUSH, so entry i of the list holds offset (seq - i). The counter
# and the epoch live and die together: if either is gone (expired, or evicted under maxmemory),
# the room starts a new epoch with an empty history, so an offset never names two messages.
# The list is trimmed from its oldest end to the size AND the byte budget (the newest message
# always stays): what one room may keep in Redis is bounded whatever its messages weigh.
PUBLISH_MESSAGE: Final = Script(
    "publish_message",
    """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[9]) then
  return {0, ''}
end
"""
    + _MAY_PUBLISH
    + """
local epoch = redis.call('GET', KEYS[2])
if not epoch or redis.call('EXISTS', KEYS[1]) == 0 then
  epoch = ARGV[7]
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[1], 0)
  redis.call('DEL', KEYS[3], KEYS[4])
end
local offset = redis.call('INCR', KEYS[1])
local message = ARGV[3] .. offset .. ',"epoch":"' .. epoch .. '"}'
local count = redis.call('LPUSH', KEYS[3], message)
local held = tonumber(redis.call('GET', KEYS[4]) or '-1')
if count == 1 then
  held = #message
elseif held < 0 then
  held = 0
  for _, kept in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    held = held + #kept
  end
else
  held = held + #message
end
local size, budget = tonumber(ARGV[4]), tonumber(ARGV[8])
while count > 1 and (count > size or held > budget) do
  held = held - #redis.call('RPOP', KEYS[3])
  count = count - 1
end
redis.call('SET', KEYS[4], held, 'EX', ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. offset .. '\\n' .. message)
return {offset, epoch}
""",
)

# KEYS: seq, epoch, history, presence. ARGV: channel, announce envelope, the member's presence
# field (broker.presence_fields: its id and user_id), username, since offset (-1: none), since
# epoch, epoch candidate, ttl (s) of a room without messages, deadline (ms, Redis's clock), the
# name of the joiner's ban key (in the room's slot; not declared: a missing declared key makes an
# importing node answer TRYAGAIN mid-migration). Returns {epoch, latest offset, status, missed
# messages newest first, time (µs), connections}; past its deadline {'', 0, 'late', {}, 0} and
# nothing done (the node gave up on the join: a late run would list a member that is not there);
# {'banned', "<until ms>|<reason>"} and nothing done when the joiner is banned from the room.
# A room that never had a message gets its counter and epoch for the given ttl, refreshed by
# each join and by the leave of its last member (LEAVE and REAP; a leave that the node does not
# keep it for deletes them): churning through fresh room names leaves nothing behind for long.
# The reply's last element, the presence hash's length after this join, is the room's size over
# every node (big rooms).
JOIN: Final = Script(
    "join",
    """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[9]) then
  return {'', 0, 'late', {}, 0}
end
local ban = redis.call('GET', ARGV[10])
if ban then
  return {'banned', ban}
end
"""
    + _MAY_PUBLISH
    + """
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
local epoch = redis.call('GET', KEYS[2])
local seq = redis.call('GET', KEYS[1])
if not epoch or not seq then
  epoch = ARGV[7]
  seq = '0'
  redis.call('SET', KEYS[2], epoch, 'EX', ARGV[8])
  redis.call('SET', KEYS[1], 0, 'EX', ARGV[8])
  redis.call('DEL', KEYS[3])
elseif seq == '0' then
  redis.call('EXPIRE', KEYS[2], ARGV[8])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
end
local latest = tonumber(seq)
redis.call('PUBLISH', ARGV[1], ARGV[2])
local size = redis.call('HLEN', KEYS[4])
local since = tonumber(ARGV[5])
if since < 0 then
  return {epoch, latest, 'not_requested', {}, now_us, size}
end
if ARGV[6] ~= epoch or since > latest then
  return {epoch, latest, 'epoch_changed', {}, now_us, size}
end
local missed = latest - since
if missed == 0 then
  return {epoch, latest, 'recovered', {}, now_us, size}
end
if missed > redis.call('LLEN', KEYS[3]) then
  return {epoch, latest, 'too_old', {}, now_us, size}
end
return {epoch, latest, 'recovered', redis.call('LRANGE', KEYS[3], 0, missed - 1), now_us, size}
""",
)

# KEYS: seq, epoch, history. ARGV: the message's JSON prefix, the epoch and the last offset
# the node knew of when it sent the message (every offset up to it ran before). Run only after
# the message's deadline passed, so its fate is settled: {'found', offset, epoch} when history
# holds it, {'absent'} when history still holds every offset after the known one in the same
# epoch and it is not among them, {'unknown'} otherwise (epoch changed, history trimmed, or the
# counter gone: deleted or evicted before the room's next message starts a new epoch, it no
# longer tells which offsets ran, and read as 0 it made a message that ran look absent).
FIND_MESSAGE: Final = Script(
    "find_message",
    """
local epoch = redis.call('GET', KEYS[2])
local seq = redis.call('GET', KEYS[1])
if not epoch or not seq or ARGV[2] == '' or epoch ~= ARGV[2] then
  return {'unknown'}
end
local latest = tonumber(seq)
local after = latest - tonumber(ARGV[3])
if after <= 0 then
  return {'absent'}
end
local kept = math.min(after, redis.call('LLEN', KEYS[3]))
local entries = redis.call('LRANGE', KEYS[3], 0, kept - 1)
for i, entry in ipairs(entries) do
  if string.sub(entry, 1, #ARGV[1]) == ARGV[1] then
    return {'found', latest - i + 1, epoch}
  end
end
if kept < after then
  return {'unknown'}
end
return {'absent'}
""",
)


# The last member of a room that never had a message leaves its counter, epoch and lineage
# (fenced scripts: Sentinel, standalone, Cluster) for the given ttl from now (a minute,
# broker.KEPT_SILENT_EPOCH_SECONDS), not longer: a member that rejoins with ``since``
# meanwhile finds its epoch (``recovered``, nothing was lost),
# where deleting them told it ``epoch_changed`` for a history that never was. A ttl of 0 deletes
# them at once (a leave the node does not keep for: joins and leaves over fresh room names must
# not pin keys, docs/security.md). A real loss still changes the epoch: Redis restarted empty or
# the keys evicted leave nothing to find, and a failover's fence sees the lineage.
# KEYS[1..3]: presence, seq, epoch; the ttl (s) is the script's argument ``ttl_argument``.
def _silent_room_expires(ttl_argument: str) -> str:
    return f"""
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('GET', KEYS[2]) == '0' then
  local line = (string.gsub(KEYS[2], ':seq$', ':line'))
  if {ttl_argument} == '0' then
    redis.call('DEL', KEYS[2], KEYS[3], line)
  else
    redis.call('EXPIRE', KEYS[2], {ttl_argument})
    redis.call('EXPIRE', KEYS[3], {ttl_argument})
    redis.call('EXPIRE', line, {ttl_argument})
  end
end
"""


# KEYS: presence, seq, epoch. ARGV: channel, announce envelope, the member's presence field, ttl
# (s) a room without messages keeps its epoch if this empties it (0: forgotten at once).
# Returns {members left in the room, time (µs)}: an empty room leaves the rooms index.
LEAVE: Final = Script(
    "leave",
    _MAY_PUBLISH
    + """
redis.call('HDEL', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
"""
    + _silent_room_expires("ARGV[4]")
    + """
local clock = redis.call('TIME')
return {redis.call('HLEN', KEYS[1]), tonumber(clock[1]) * 1000000 + tonumber(clock[2])}
""",
)

# KEYS: seq, epoch, history. ARGV: limit. Returns {epoch or '', latest, messages newest first}.
HISTORY: Final = Script(
    "history",
    """
local epoch = redis.call('GET', KEYS[2]) or ''
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
return {epoch, latest, redis.call('LRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)}
""",
)

# KEYS: seq, epoch, history. ARGV: after (an offset; -N: the last N messages history holds), at
# most this many messages, bytes, '1' to count the bytes of every message after ``after``.
# Returns {epoch or '', latest, after (resolved), messages oldest first, those bytes or 0}: the
# messages from offset after+1 on, at least one and no more bytes than asked for beyond the
# first; none when history no longer holds offset after+1 (trimmed, expired). A page of a
# streamed answer or catch-up: read only once the client drained the previous one; the first
# page tells the answer's size, so that it can go in one frame of known length.
HISTORY_RANGE: Final = Script(
    "history_range",
    """
local epoch = redis.call('GET', KEYS[2]) or ''
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local held = redis.call('LLEN', KEYS[3])
local after = tonumber(ARGV[1])
if after < 0 then
  after = latest - math.min(-after, held)
end
if after >= latest then
  return {epoch, latest, after, {}, 0}
end
local first = latest - after - 1
if first >= held then
  return {epoch, latest, after, {}, 0}
end
local total = 0
if ARGV[4] == '1' then
  local index = 0
  while index <= first do
    for _, entry in ipairs(redis.call('LRANGE', KEYS[3], index, math.min(index + 15, first))) do
      total = total + #entry
    end
    index = index + 16
  end
end
local limit = math.max(first - tonumber(ARGV[2]) + 1, 0)
local budget = tonumber(ARGV[3])
local out = {}
local size = 0
-- Newest first in the list, so walked backwards, in batches sized by what the page still has
-- room for at the entries' mean size seen so far (one entry first, at most 16): a page reads at
-- most one entry more than it returns. Fixed batches of 16 read ~1 MB for one 60 KB message.
local index = first
local batch = 1
while index >= limit do
  local entries = redis.call('LRANGE', KEYS[3], math.max(index - batch + 1, limit), index)
  for i = #entries, 1, -1 do
    local entry = entries[i]
    if #out > 0 and size + #entry > budget then
      return {epoch, latest, after, out, total}
    end
    out[#out + 1] = entry
    size = size + #entry
  end
  index = index - batch
  if size > 0 then
    batch = math.max(1, math.min(16, math.floor((budget - size) * #out / size) + 1))
  else
    batch = 16
  end
end
return {epoch, latest, after, out, total}
""",
)

# KEYS: presence, seq, epoch. ARGV: channel, envelope head, member prefix of the dead node, room,
# ttl (s) of a room without messages.
# Removes the dead node's members and announces each departure, with the user_id its field holds
# after the separator (broker.presence_fields; none in a previous release's entry). Only ids as
# nodes make them (URL-safe base64) are spliced into the JSON. Runs only when a node died.
REAP: Final = Script(
    "reap",
    _MAY_PUBLISH
    + """
local fields = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #fields, 2 do
  local member, username = fields[i], fields[i + 1]
  if string.sub(member, 1, #ARGV[3]) == ARGV[3] then
    redis.call('HDEL', KEYS[1], member)
    local event = '{"type":"user_left","room":"' .. ARGV[4] .. '","username":"' .. username .. '"'
    local user_id = string.match(member, '\\31([%w_-]+)$')
    if user_id then
      event = event .. ',"user_id":"' .. user_id .. '"'
    end
    redis.call('PUBLISH', ARGV[1], ARGV[2] .. '0\\n' .. event .. '}')
    removed = removed + 1
  end
end
"""
    + _silent_room_expires("ARGV[5]")
    + """
return removed
""",
)

# KEYS: presence. ARGV: member prefix of this node, then field/username pairs.
# Makes this node's entries exactly the given ones (after an outage, leaves may have been lost).
RESYNC: Final = Script(
    "resync",
    """
local wanted = {}
for i = 2, #ARGV, 2 do
  wanted[ARGV[i]] = ARGV[i + 1]
end
local fields = redis.call('HKEYS', KEYS[1])
for _, member in ipairs(fields) do
  if string.sub(member, 1, #ARGV[1]) == ARGV[1] and not wanted[member] then
    redis.call('HDEL', KEYS[1], member)
  end
end
for member, username in pairs(wanted) do
  redis.call('HSET', KEYS[1], member, username)
end
return 1
""",
)

# A token bucket kept in one string key, "<level> <stamp ms>", on Redis' own clock (scripts
# are replicated by their effects, so TIME is allowed). A bucket at rest is full, and so is a
# missing key: each write expires the key once it would have refilled, and idle buckets cost
# no memory. ``level`` may go below zero (a debt) when charges arrive after the fact (see
# CHARGE).
_BUCKET: Final = """
local function bucket_level(key, rate, burst)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local saved = redis.call('GET', key)
  if not saved then
    return burst, now
  end
  local level, stamp = string.match(saved, '^(%S+) (%S+)$')
  return math.min(burst, tonumber(level) + math.max(0, now - tonumber(stamp)) * rate / 1000), now
end
local function bucket_save(key, level, now, rate, burst)
  redis.call('SET', key, level .. ' ' .. now, 'PX', math.ceil((burst - level) * 1000 / rate) + 1)
end
"""

# Put before a script whose LAST key is the room's bucket (room_rate_key) and whose LAST four
# arguments are the room's lifetime (seconds: what the script gives the room's offset counter,
# KEYS[1]), the tokens its sender must leave behind (0, or the room's reserve for a heavy
# sender: see Node._room_reserve), the bucket's rate (per second) and burst: the room's messages
# over all nodes take one token each, and a message that finds none (or only the reserve) is
# refused before anything else runs, answering {-1, milliseconds until a token is back}.
_ROOM_LIMIT: Final = (
    _BUCKET
    + """
do
  local rate_key, rate, burst = KEYS[#KEYS], tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
  local need = 1 + tonumber(ARGV[#ARGV - 2])
  local level, now = bucket_level(rate_key, rate, burst)
  if level < need then
    return {-1, math.ceil((need - level) * 1000 / rate)}
  end
  -- The bucket lives as long as the room's counter (KEYS[1]), not only until it refills: in
  -- Redis Cluster a script whose keys are not all present on a slot's importing node gets
  -- TRYAGAIN, so a bucket key that came and went would refuse the room's messages for the whole
  -- of a slot migration. One small key per room that had a message, given the counter's
  -- lifetime in its own SET: set in the same script as the counter's, they expire together.
  local refill = math.ceil((burst - level + 1) * 1000 / rate) + 1
  local lifetime = math.max(refill, tonumber(ARGV[#ARGV - 3]) * 1000)
  redis.call('SET', rate_key, (level - 1) .. ' ' .. now, 'PX', lifetime)
end
"""
)


# What a room-limited script answers when the room's bucket refused: {ROOM_REFUSED, retry ms}.
ROOM_REFUSED: Final = -1


def room_limited(script: Script) -> Script:
    """``script`` run only if the room's cluster-wide bucket has a token (see _ROOM_LIMIT)."""
    return Script(script.name, _ROOM_LIMIT + script.source)


# KEYS: buckets of one owner (client_rate_key). ARGV: for each key in turn, cost, rate (per
# second), burst, debt. The node admitted these actions already (against its own copy of each
# bucket, so that no message waits for Redis): the charge is taken whatever the level, and the
# levels left (in thousandths of a token, one per key) tell the node where its copies stand.
# The debt stops at ``debt`` tokens: a whole burst for messages, typing and join/leave churn (a
# debt of one token forgave a token each time two nodes' charges met at the floor: a client
# spread over N nodes sent about N x 10 messages a second, Node._charge_message).
CHARGE: Final = Script(
    "charge",
    _BUCKET
    + """
local levels = {}
for i, key in ipairs(KEYS) do
  local at = (i - 1) * 4
  local rate, burst = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local level, now = bucket_level(key, rate, burst)
  level = math.max(math.min(level, -tonumber(ARGV[at + 4])), level - tonumber(ARGV[at + 1]))
  bucket_save(key, level, now, rate, burst)
  levels[i] = math.floor(level * 1000)
end
return levels
""",
)

# KEYS: seq, epoch, history, history bytes. ARGV: channel, envelope head, room, offset.
# Entry i of the history holds offset (seq - i): the message at ``offset`` is replaced by its
# tombstone in place, and members are told, in one step (offsets and order stay as they were).
# Returns {epoch, 1} (deleted now), {epoch, 0} (deleted before), {epoch or '', -1} (the offset
# is not in the history: never published, or trimmed away).
DELETE_MESSAGE: Final = Script(
    "delete_message",
    """
local epoch = redis.call('GET', KEYS[2])
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local offset = tonumber(ARGV[4])
if not epoch or offset < 1 or offset > latest then
  return {epoch or '', -1}
end
local index = latest - offset
local entry = redis.call('LINDEX', KEYS[3], index)
local tombstone = '{"type":"message","room":"' .. ARGV[3] .. '","offset":' .. offset
  .. ',"epoch":"' .. epoch .. '","deleted":true}'
if entry == tombstone then
  return {epoch, 0}
end
local mark = '"offset":' .. offset .. ',"epoch":"' .. epoch .. '"'
if not entry or not string.find(entry, mark, 1, true) then
  return {epoch, -1}
end
redis.call('LSET', KEYS[3], index, tombstone)
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('INCRBY', KEYS[4], #tombstone - #entry)
end
local event = '{"type":"message_deleted","room":"' .. ARGV[3] .. '","epoch":"' .. epoch
  .. '","offset":' .. offset .. '}'
redis.call('PUBLISH', ARGV[1], ARGV[2] .. '0\\n' .. event)
return {epoch, 1}
""",
)

# KEYS: seq, epoch, history, history bytes. ARGV: channel, envelope head, room.
# Empties the history but keeps the counter and epoch (offsets never repeat): a resume from an
# earlier offset finds ``too_old``. Returns {epoch or '', latest offset}.
CLEAR_HISTORY: Final = Script(
    "clear_history",
    """
local epoch = redis.call('GET', KEYS[2])
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('DEL', KEYS[3], KEYS[4])
if not epoch then
  return {'', latest}
end
local event = '{"type":"history_cleared","room":"' .. ARGV[3] .. '","epoch":"' .. epoch
  .. '","up_to_offset":' .. latest .. '}'
redis.call('PUBLISH', ARGV[1], ARGV[2] .. '0\\n' .. event)
return {epoch, latest}
""",
)

# KEYS: the ban, bans (zset), ban reasons (hash). ARGV: user, seconds, reason.
# Returns the ban's end (ms, Redis' clock). The ban key expires by itself; the listing's entries
# are pruned when read or written, and go with the last ban.
BAN: Final = Script(
    "ban",
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ms = tonumber(ARGV[2]) * 1000
local till = now + ms
redis.call('SET', KEYS[1], till .. '|' .. ARGV[3], 'PX', ms)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, user in ipairs(expired) do
  redis.call('HDEL', KEYS[3], user)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], till, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
local last = tonumber(redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2])
redis.call('PEXPIREAT', KEYS[2], last)
redis.call('PEXPIREAT', KEYS[3], last)
return till
""",
)

# KEYS: the ban, bans, ban reasons. ARGV: user. Returns 1 if there was a ban to lift.
UNBAN: Final = Script(
    "unban",
    """
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return existed
""",
)

# KEYS: bans, ban reasons. ARGV: the most to return.
# Returns {user, until ms, reason, ...} for the bans still in force, soonest to end first.
BANS: Final = Script(
    "bans",
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, user in ipairs(expired) do
  redis.call('HDEL', KEYS[2], user)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local found = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #found, 2 do
  out[#out + 1] = found[i]
  out[#out + 1] = found[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], found[i]) or ''
end
return out
""",
)

# KEYS: presence. Returns {time (µs), usernames...}: a room's counts for the listing, and when
# it was seen (empty, it may leave the index unless somebody joined since).
ROOM_STATS: Final = Script(
    "room_stats",
    """
local clock = redis.call('TIME')
local out = {tonumber(clock[1]) * 1000000 + tonumber(clock[2])}
for _, name in ipairs(redis.call('HVALS', KEYS[1])) do
  out[#out + 1] = name
end
return out
""",
)

# KEYS: rooms index, latest joins. ARGV: room, join time (µs).
INDEX_ROOM: Final = Script(
    "index_room",
    """
local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) > seen then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
""",
)

# KEYS: rooms index, latest joins. ARGV: room, time (µs) it was seen empty.
# Forgets the room unless a join came after it was seen empty.
UNINDEX_ROOM: Final = Script(
    "unindex_room",
    """
local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if seen <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
""",
)

LIMITED_PUBLISH_MESSAGE: Final = room_limited(PUBLISH_MESSAGE)
ALL: Final = (
    LIMITED_PUBLISH_MESSAGE,
    JOIN,
    LEAVE,
    HISTORY,
    REAP,
    RESYNC,
    FIND_MESSAGE,
    DELETE_MESSAGE,
    CLEAR_HISTORY,
    BAN,
    UNBAN,
    BANS,
    ROOM_STATS,
    INDEX_ROOM,
    UNINDEX_ROOM,
    HISTORY_RANGE,
)


# KEYS: the registry of live nodes (instance -> time of its last heartbeat, ms). ARGV: this
# node's instance. Scored by Redis's clock, not the node's: every node's heartbeat and every
# reaper's horizon are then read on one clock, and a node whose own clock is off (NTP not
# synchronised, a VM restored from a snapshot) is neither taken for dead nor takes the others for
# dead. Returns {1 if the entry was missing (Redis lost it, or the node was reaped), Redis now}.
HEARTBEAT: Final = Script(
    "heartbeat",
    """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return {redis.call('ZADD', KEYS[1], now_ms, ARGV[1]), now_ms}
""",
)


@dataclass(frozen=True)
class ScriptSet:
    """The scripts one broker runs: classic PUBLISH, or SPUBLISH on Redis Cluster."""

    publish_message: Script
    join: Script
    leave: Script
    history: Script
    reap: Script
    resync: Script
    find_message: Script
    delete_message: Script
    clear_history: Script
    ban: Script
    unban: Script
    bans: Script
    room_stats: Script
    index_room: Script
    unindex_room: Script
    history_range: Script
    charge: Script = CHARGE
    heartbeat: Script = HEARTBEAT

    @property
    def all(self) -> tuple[Script, ...]:
        return (
            self.publish_message,
            self.join,
            self.leave,
            self.history,
            self.reap,
            self.resync,
            self.find_message,
            self.delete_message,
            self.clear_history,
            self.ban,
            self.unban,
            self.bans,
            self.room_stats,
            self.index_room,
            self.unindex_room,
            self.history_range,
            self.charge,
            self.heartbeat,
        )


def _sharded(script: Script) -> Script:
    # The channel (``rc:{room}``) shares the keys' hash tag, so SPUBLISH stays in the script's
    # slot: Redis Cluster accepts it and delivers only within the shard that owns the room.
    return Script(script.name + "_sharded", script.source.replace("'PUBLISH'", "'SPUBLISH'"))


# A room whose last writes a fence finds lost starts a new epoch, named from the old one and the
# primary now writing (the same on every node). The counter stays (at 0), so the new epoch is
# kept by the scripts that follow; the history and its byte count go with the old sequence.
_NEW_EPOCH: Final = """\
    redis.call('SET', KEYS[2], string.sub(redis.sha1hex(replid .. ':' .. old), 1, 12))
    redis.call('SET', KEYS[1], 0)
    redis.call('DEL', KEYS[3], (string.gsub(KEYS[1], ':seq$', ':bytes')))"""

# Sentinel mode: replication is asynchronous, so a failover (SIGKILL of the primary, or Sentinel
# promoting a replica while the old primary still takes writes) may lose a room's last writes:
# messages acknowledged, even delivered live, whose offsets the new primary would hand out again
# to other texts. So each script that reads or writes a room's sequence first checks under which
# primary (``master_replid``) the room was last written; under another one, the room starts a
# new epoch (named from the old one and the primary, the same on every node), so that clients
# get ``epoch_changed`` instead of reused offsets. Conservative: a failover that lost nothing
# changes the epochs of the rooms too (nothing tells the new primary what the old one had).
# KEYS[1..3] are the room's seq, epoch and history keys; ``:line`` beside them holds the replid.
_FENCE_TEMPLATE: Final = """
local function fence_lineage()
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%w+)')
  local line_key = (string.gsub(KEYS[1], ':seq$', ':line'))
  local line = redis.call('GET', line_key)
  if not replid or line == replid then
    return replid, line_key, line
  end
  local old = redis.call('GET', KEYS[2])
  if line and old and {lost} then
{new_epoch}
  end
  return replid, line_key, line
end
local fence_replid, fence_line_key, fence_line = fence_lineage()
local function fenced_body()
"""
_LINEAGE_FENCE: Final = _FENCE_TEMPLATE.replace("{lost}", "true").replace("{new_epoch}", _NEW_EPOCH)
# Redis Cluster: a shard's replica promoted by a failover renames the replication history it
# followed ``master_replid2``, so a room last written under that primary may lack its last
# writes, as in Sentinel mode, and starts a new epoch. A shard primary restarted without a
# failover (no replica, or back within ``cluster-node-timeout``) keeps its role and slots but
# comes back on its last RDB snapshot or AOF (``appendfsync everysec``), older than what it
# acknowledged, under a new ``master_replid`` with no ``master_replid2``: the lineage names the
# Redis node (``CLUSTER MYID``, kept across restarts in ``nodes.conf``) beside the replid, so a
# room last written by this same node under another replid starts a new epoch too (as a
# standalone Redis's restart does; conservative: a restart that lost nothing costs the shard's
# rooms their recent history). A room whose keys came from another node (a slot migration:
# MIGRATE copies them whole, nothing is lost) carries a lineage that names neither, and simply
# takes the new owner's. The node id is asked only when the lineage is not this replid's
# (``replid@node``), so a publish costs what it did. A room untouched across two successive
# failovers of its shard names the first primary, which the second promoted replica's
# ``master_replid2`` no longer does: it differs from a migrated room in that its node no longer
# serves as a primary (failed, or back as a replica), while a migration's source still does.
# So a lineage naming another node starts a new epoch unless ``CLUSTER NODES`` lists that node
# as a primary in good standing (conservative: a room moved off a node that then failed, or was
# forgotten, before the room was touched here loses its recent history too). Read once per room
# after a failover or a migration, like the node id.
_CLUSTER_LINEAGE_FENCE: Final = """
local function fence_lineage()
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%w+)')
  local line_key = (string.gsub(KEYS[1], ':seq$', ':line'))
  local line = redis.call('GET', line_key)
  if not replid or (line and string.sub(line, 1, #replid + 1) == replid .. '@') then
    return line or replid, line_key, line
  end
  -- A Redis that refuses CLUSTER MYID to scripts leaves the lineage at the replid alone.
  local me = redis.pcall('CLUSTER', 'MYID')
  local mark = replid
  if type(me) == 'string' then
    mark = replid .. '@' .. me
  else
    me = nil
  end
  if line == mark then
    return mark, line_key, line
  end
  local old = redis.call('GET', KEYS[2])
  local line_replid, line_node = string.match(line or '', '^(%w+)@?(%w*)$')
  local lost = line_replid == string.match(info, 'master_replid2:(%w+)')
    or (me ~= nil and line_node == me and line_replid ~= replid)
  if old and not lost and me ~= nil and line_node and line_node ~= '' and line_node ~= me then
    local nodes = redis.pcall('CLUSTER', 'NODES')
    if type(nodes) == 'string' then
      local flags = string.match('\\n' .. nodes, '\\n' .. line_node .. ' %S+ (%S+)')
      lost = not flags or not string.find(',' .. flags .. ',', ',master,', 1, true)
        or string.find(',' .. flags .. ',', ',fail,', 1, true) ~= nil
    end
  end
  if line and old and lost then
{new_epoch}
  end
  return mark, line_key, line
end
local fence_replid, fence_line_key, fence_line = fence_lineage()
local function fenced_body()
""".replace("{new_epoch}", _NEW_EPOCH)
# After the script: the room's lineage lives exactly as long as its epoch. A fixed lifetime left
# a week-long key behind every room name anyone joined and left, or asked the history of.
_LINEAGE_KEEP: Final = """
end
local result = fenced_body()
if fence_replid then
  local epoch_ttl = redis.call('PTTL', KEYS[2])
  if epoch_ttl == -2 then
    redis.call('DEL', fence_line_key)
  elseif epoch_ttl == -1 then
    redis.call('SET', fence_line_key, fence_replid)
  elseif fence_line ~= fence_replid or redis.call('PTTL', fence_line_key) < epoch_ttl - 60000 then
    -- Written again only when it changed or fell a minute behind the epoch's ttl (which each
    -- publish refreshes): a write per publish cost Redis a third more CPU per message.
    redis.call('SET', fence_line_key, fence_replid, 'PX', epoch_ttl)
  end
end
return result
"""


def _fenced(script: Script, fence: str = _LINEAGE_FENCE) -> Script:
    # The script's own body runs as a function, so that its early returns still pass the keep.
    return Script(script.name + "_fenced", fence + script.source + _LINEAGE_KEEP)


CLASSIC: Final = ScriptSet(*ALL)
SHARDED: Final = ScriptSet(*(_sharded(script) for script in ALL))
# Every script that reads or writes a room's sequence (the publish script as it is really sent:
# behind the room's rate limit).
_ROOM_SEQUENCE_SCRIPTS: Final = (
    LIMITED_PUBLISH_MESSAGE,
    JOIN,
    HISTORY,
    FIND_MESSAGE,
    DELETE_MESSAGE,
    CLEAR_HISTORY,
    HISTORY_RANGE,
)
FENCED: Final = ScriptSet(
    *(_fenced(script) if script in _ROOM_SEQUENCE_SCRIPTS else script for script in ALL)
)
CLUSTER_FENCED: Final = ScriptSet(
    *(
        _sharded(_fenced(script, _CLUSTER_LINEAGE_FENCE))
        if script in _ROOM_SEQUENCE_SCRIPTS
        else _sharded(script)
        for script in ALL
    )
)
