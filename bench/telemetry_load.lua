-- wrk script for the telemetry figures: each request POSTs /api/v1/readings with a batch of new readings.
--
-- wrk -s bench/telemetry_load.lua <url> -- <batch size> <token 1> <token 2> ...
--
-- Thread n sends as device n (its token); seqs are the thread's own counter,
-- so every reading is new. A 202 is an accepted batch; anything else is
-- counted as bad, and done() prints one RESULT line the benchmark parses.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  size = tonumber(args[1])
  token = args[id + 1]
  counter, ok, bad, first_bad = 0, 0, 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
  at = os.date("!%Y-%m-%dT%H:%M:%SZ")
end

function request()
  local items = {}
  for i = 1, size do
    counter = counter + 1
    items[i] = string.format('{"seq":%d,"at":"%s","metric":"m%d","value":%d.5}', counter, at, counter % 4, counter % 100)
  end
  return wrk.format("POST", "/api/v1/readings", nil, '{"readings":[' .. table.concat(items, ",") .. "]}")
end

function response(status, headers, body)
  if status == 202 then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == 0 then first_bad = status end
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad, first = 0, 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_bad = total_bad + thread:get("bad")
    if first == 0 then first = thread:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT ok=%d bad=%d first_bad=%d requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    total_ok, total_bad, first, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout
  ))
end
