"""The rate limiter's Redis Lua scripts (GCRA admission, debits, leases, concurrency slots)."""

# GCRA with a burst of the whole period's allowance. State per meter: the theoretical arrival
# time (TAT, ms). One call admits a batch of requests in order (requests that arrive in the same
# event-loop tick share one round trip). ARGV: now_ms, then per admission: the number of meters
# m, then per meter: limit, period_ms, mode (1 = admit one request and debit it, 2 = only
# require a positive allowance, 0 = skip); KEYS holds the meters' keys in the same order.
# Nothing is written for an admission unless all its meters admit ("refused requests are not
# counted"). Returns per admission: per meter remaining and reset_ms, then the 1-based index
# of the refusing meter (0 = admitted) and its retry-after in ms.
ADMIT = """
local now = tonumber(ARGV[1])
local out = {}
local a = 2
local k = 1
while a <= #ARGV do
  local m = tonumber(ARGV[a])
  a = a + 1
  local refused, retry = 0, 0
  local writes = {}
  for i = 1, m do
    local key = KEYS[k]
    local limit = tonumber(ARGV[a])
    local period = tonumber(ARGV[a + 1])
    local mode = tonumber(ARGV[a + 2])
    a = a + 3
    k = k + 1
    if mode == 0 or limit <= 0 then
      table.insert(out, -1); table.insert(out, 0)
    else
      local t = period / limit
      local tat = tonumber(redis.call('GET', key) or now)
      if tat < now then tat = now end
      local new_tat = tat
      if mode == 1 then new_tat = tat + t end
      local used = new_tat - now
      local ok
      -- 0.01 ms of slack absorbs the rounding of stored times (requests in one batch share `now`).
      if mode == 1 then ok = used <= period + 0.01 else ok = used < period end
      if not ok and refused == 0 then
        refused = i
        if mode == 1 then retry = used - period else retry = used - period + 1 end
      end
      if ok and mode == 1 then table.insert(writes, {key, new_tat, used}) end
      local remaining = math.floor((period - used + 0.01) / t)
      if remaining < 0 then remaining = 0 end
      table.insert(out, remaining); table.insert(out, math.ceil(used))
    end
  end
  if refused == 0 then
    for _, w in ipairs(writes) do
      redis.call('SET', w[1], string.format('%.3f', w[2]), 'PX', math.max(1, math.ceil(w[3])))
    end
  end
  table.insert(out, refused); table.insert(out, math.ceil(retry))
end
return out
"""

# Debit an amount after the fact (tokens generated, audio decoded); may go negative.
DEBIT = """
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[3]) / tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = tat + t * tonumber(ARGV[4])
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
return 1
"""

# Take a lease of up to ARGV[4] requests (GCRA as in _ADMIT: each request adds limit/period to
# the TAT) after giving back ARGV[5] ms of an earlier lease's unused part. Returns the number
# granted, the remaining allowance and reset (ms) after the grant, and the retry-after (ms)
# when nothing could be granted.
LEASE = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local refund = tonumber(ARGV[5])
local t = period / limit
local stored = redis.call('GET', KEYS[1])
local tat = tonumber(stored or now) - refund
if tat < now then tat = now end
local grant = math.floor((now + period + 0.01 - tat) / t)
if grant > want then grant = want end
if grant < 0 then grant = 0 end
local new_tat = tat + grant * t
if grant > 0 or (stored and refund > 0) then
  if new_tat > now then
    redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
  else
    redis.call('DEL', KEYS[1])
  end
end
local used = new_tat - now
local remaining = math.floor((period - used + 0.01) / t)
if remaining < 0 then remaining = 0 end
local retry = 0
if grant == 0 then retry = tat + t - now - period end
return {grant, remaining, math.ceil(used), math.ceil(retry)}
"""

# Concurrency slots: a sorted set of holders scored by lease expiry (ms).
ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = tonumber(ARGV[2])
local held = redis.call('ZCARD', KEYS[1])
if limit > 0 and held >= limit and not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return {0, held}
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(ARGV[4]) - tonumber(ARGV[1])))
return {1, redis.call('ZCARD', KEYS[1])}
"""
