-- wrk replays pre-signed requests, each one exactly once (bench/replay.py writes them).
--
--   wrk -t T -c C -d S --timeout 30s -s bench/wrk_replay.lua URL -- PREFIX
--
-- Thread i reads PREFIX.i: one request per line, fields separated by a tab:
--   METHOD <tab> PATH <tab> BODY <tab> NAME <tab> VALUE [<tab> NAME <tab> VALUE ...]
-- (BODY may be empty). Each connection of the thread takes the next unused line. When the
-- thread's lines are all sent, its connections send nothing more (delay() parks them) and the
-- thread stops once every sent request is answered (wrk still reports its full -d duration); "exhausted" in the summary then says the
-- file was too small for the duration (the run's rate is not a measure).
--
-- done() prints one line, "WRK_REPLAY_JSON {...}", for bench/replay.py: status counts, the
-- first non-2xx answer's body, p50/p90/p99/mean/max latency (microseconds), socket errors.

local threads = {}

-- -------------------------------------------------------------- setup and done (main state)

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local function json_string(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local statuses, sample, sample_status = {}, nil, nil
  local loaded, sent, answered, exhausted, padding = 0, 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      statuses[status] = (statuses[status] or 0) + n
    end
    if sample == nil and thread:get("sample") then
      sample, sample_status = thread:get("sample"), thread:get("sample_status")
    end
    loaded = loaded + (thread:get("loaded") or 0)
    sent = sent + (thread:get("sent") or 0)
    answered = answered + (thread:get("answered") or 0)
    padding = padding + (thread:get("padding") or 0)
    if thread:get("exhausted") then exhausted = exhausted + 1 end
  end
  local parts = {}
  for status, n in pairs(statuses) do
    table.insert(parts, json_string(tostring(status)) .. ":" .. n)
  end
  local e = summary.errors
  local out = {
    '"duration_us":' .. summary.duration,
    '"requests":' .. summary.requests,
    '"statuses":{' .. table.concat(parts, ",") .. "}",
    '"loaded":' .. loaded,
    '"sent":' .. sent,
    '"answered":' .. answered,
    '"padding":' .. padding,
    '"threads_exhausted":' .. exhausted,
    '"threads":' .. #threads,
    '"p50_us":' .. latency:percentile(50.0),
    '"p90_us":' .. latency:percentile(90.0),
    '"p99_us":' .. latency:percentile(99.0),
    '"mean_us":' .. latency.mean,
    '"max_us":' .. latency.max,
    '"socket_errors":{"connect":' .. e.connect .. ',"read":' .. e.read .. ',"write":'
      .. e.write .. ',"timeout":' .. e.timeout .. "}",
    '"sample_status":' .. (sample_status or "null"),
    '"sample_body":' .. (sample and json_string(sample) or "null"),
  }
  io.write("WRK_REPLAY_JSON {" .. table.concat(out, ",") .. "}\n")
end

-- -------------------------------------------------------------- running (one state per thread)

local queue = nil
local next_index = 1
statuses = {}
loaded, sent, answered, padding, reserved = 0, 0, 0, 0, 0
exhausted, started = false, false
sample, sample_status = nil, nil

local function split_tabs(line)
  local fields, start = {}, 1
  while true do
    local tab = string.find(line, "\t", start, true)
    if tab == nil then
      table.insert(fields, string.sub(line, start))
      return fields
    end
    table.insert(fields, string.sub(line, start, tab - 1))
    start = tab + 1
  end
end

function init(args)
  local prefix = args[1]
  if prefix == nil then
    error("wrk_replay.lua needs the request file prefix: wrk ... -- PREFIX")
  end
  local path = prefix .. "." .. id
  local file = io.open(path, "r")
  if file == nil then
    error("wrk_replay.lua: cannot open " .. path)
  end
  queue = {}
  for line in file:lines() do
    if #line > 0 then
      local f = split_tabs(line)
      local headers = {}
      for i = 4, #f - 1, 2 do
        headers[f[i]] = f[i + 1]
      end
      local body = f[3]
      if body == "" then body = nil end
      queue[#queue + 1] = { f[1], f[2], headers, body }
    end
  end
  file:close()
  loaded = #queue
end

function request()
  if queue == nil or not started then
    -- wrk calls request() once, before the run, to inspect what it returns (in thread 0's
    -- state, after init): it is never sent, so no line is spent on it.
    return wrk.format("GET", "/")
  end
  if reserved > 0 then reserved = reserved - 1 end
  local r = queue[next_index]
  if r == nil then
    -- Only when a connection is re-opened after an error with nothing left to send: a
    -- harmless unsigned GET, counted apart ("padding"; replay.py takes its answer off the
    -- 2xx).
    exhausted = true
    padding = padding + 1
    return wrk.format("GET", "/ready")
  end
  queue[next_index] = nil
  next_index = next_index + 1
  sent = sent + 1
  return wrk.format(r[1], r[2], r[3], r[4])
end

-- wrk asks delay() before every request of a connection (the first too), then calls
-- request() when the delay is over: a line is reserved here so that two connections between
-- the two calls cannot both count on the last one.
function delay()
  if queue == nil then return 0 end
  started = true
  if next_index + reserved <= loaded then
    reserved = reserved + 1
    return 0
  end
  exhausted = true
  -- Not while a line is reserved: its connection is between delay() and request(), and
  -- stopping now would leave that line unsent.
  if reserved == 0 and answered >= sent + padding then wrk.thread:stop() end
  return 3600000 -- park the connection: no request is sent twice
end

function response(status, headers, body)
  answered = answered + 1
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if (status < 200 or status > 299) and sample == nil then
    sample, sample_status = string.sub(body or "", 1, 2000), status
  end
  if exhausted and reserved == 0 and answered >= sent + padding then
    wrk.thread:stop()
  end
end
