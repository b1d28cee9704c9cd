"""The Lua scripts of `RedisBroker`: every multi-step move of a job is one script, so a
process killed in the middle of a move leaves nothing half-done."""

from __future__ import annotations

DUE = """
local function due(ms)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ms)
end
"""

# KEYS: stream, delayed. ARGV: delay_ms, then (nonce, batch, body) per job.
PUT = (
    DUE
    + """
local delay = tonumber(ARGV[1])
if delay > 0 then
  local at = due(delay)
  for i = 2, #ARGV, 3 do
    redis.call('ZADD', KEYS[2], at, ARGV[i] .. '\\n' .. ARGV[i + 1] .. '\\n' .. ARGV[i + 2])
  end
else
  for i = 2, #ARGV, 3 do
    redis.call('XADD', KEYS[1], '*', 'j', ARGV[i + 2], 'b', ARGV[i + 1])
  end
end
return (#ARGV - 1) / 3
"""
)

# KEYS: stream, delayed. ARGV: limit. Returns {moved, ms until the next one or -1}.
PROMOTE = (
    DUE
    + """
local now = due(0)
local ready = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(ready) do
  local a = string.find(m, '\\n', 1, true)
  local b = string.find(m, '\\n', a + 1, true)
  if a == 2 and string.sub(m, 1, 1) == '~' then  -- a lane's token (_redis_lanes.py)
    redis.call('XADD', KEYS[1], '*', 'l', string.sub(m, b + 1))
  else
    redis.call('XADD', KEYS[1], '*', 'j', string.sub(m, b + 1), 'b', string.sub(m, a + 1, b - 1))
  end
  redis.call('ZREM', KEYS[2], m)
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then wait = math.max(0, tonumber(nxt[2]) - now) end
return {#ready, wait}
"""
)

# KEYS: stream. ARGV: group, ids...
ACK = """
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return n
"""

# KEYS: stream, delayed. ARGV: group, id, delay_ms, nonce, batch, body.
RETRY = (
    DUE
    + """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[2], due(ARGV[3]), ARGV[4] .. '\\n' .. ARGV[5] .. '\\n' .. ARGV[6])
else
  redis.call('XADD', KEYS[1], '*', 'j', ARGV[6], 'b', ARGV[5])
end
return 1
"""
)

# KEYS: stream. ARGV: group, consumer, count, ids... Renews the entries this consumer owns.
HEARTBEAT = """
local mine = {}
for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[3], ARGV[2])) do
  mine[p[1]] = true
end
local call = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for i = 4, #ARGV do
  if mine[ARGV[i]] then call[#call + 1] = ARGV[i] end
end
local n = #call - 5
if n > 0 then
  call[#call + 1] = 'JUSTID'
  redis.call(unpack(call))
end
return n
"""

# KEYS: stream. ARGV: group, consumer, (id, deliveries counted so far)...
RELEASE = """
local n = 0
for i = 3, #ARGV, 2 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    if e[1] then
      local f = e[1][2]
      local fields = {}
      for k = 1, #f, 2 do fields[f[k]] = f[k + 1] end
      if fields['l'] then  -- a lane's token: back for anyone, the lane starts anew
        redis.call('XADD', KEYS[1], '*', 'l', fields['l'], 'd', ARGV[i + 1])
      else
        redis.call('XADD', KEYS[1], '*', 'j', fields['j'], 'b', fields['b'] or '',
                   'd', ARGV[i + 1])
      end
      n = n + 1
    end
  end
end
return n
"""

# KEYS: stream. ARGV: group, consumer, min_idle_ms, cursor, count.
# Returns {next cursor, id, fields, deliveries, id, fields, deliveries, ...}.
RECLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {r[1]}
for _, e in ipairs(r[2]) do
  if e[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    out[#out + 1] = e[1]
    out[#out + 1] = e[2]
    out[#out + 1] = p[1][4]
  end
end
return out
"""

# KEYS: stream, delayed. ARGV: group, batch, ids of entries this consumer holds unhanded.
# Removes the batch's jobs nobody has been handed: delayed ones, stream entries past the
# group's last delivered id, and the given (prefetched) entries. Returns their bodies.
DISCARD = """
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local a = string.find(m, '\\n', 1, true)
  local b = string.find(m, '\\n', a + 1, true)
  if string.sub(m, a + 1, b - 1) == ARGV[2] then
    redis.call('ZREM', KEYS[2], m)
    out[#out + 1] = string.sub(m, b + 1)
  end
end
local function take(e)
  local f = e[2]
  local fields = {}
  for k = 1, #f, 2 do fields[f[k]] = f[k + 1] end
  if fields['b'] == ARGV[2] then
    redis.call('XACK', KEYS[1], ARGV[1], e[1])
    redis.call('XDEL', KEYS[1], e[1])
    out[#out + 1] = fields['j']
  end
end
local last = '0-0'
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for k = 1, #g, 2 do info[g[k]] = g[k + 1] end
  if info['name'] == ARGV[1] then last = info['last-delivered-id'] end
end
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '(' .. last, '+')) do take(e) end
for i = 3, #ARGV do
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])) do take(e) end
end
return out
"""

# KEYS: stream. ARGV: group, min idle ms. Deletes the group's consumers that hold nothing
# and were idle that long (processes gone); one holding entries is never deleted (deleting
# it would drop its pending entries), and a live one deleted is made again by its next read.
REAP = """
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for k = 1, #c, 2 do info[c[k]] = c[k + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    n = n + 1
  end
end
return n
"""

STATS = """
local ready = 0
local running = 0
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    local info = {}
    for k = 1, #g, 2 do info[g[k]] = g[k + 1] end
    if info['name'] == ARGV[1] then
      running = info['pending']
      ready = redis.call('XLEN', KEYS[1]) - running
    end
  end
end
return {ready, redis.call('ZCARD', KEYS[2]), running}
"""
