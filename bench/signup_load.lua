-- wrk script for figure 4: each request POSTs /signup/ with a fresh address.
--
-- wrk -s bench/signup_load.lua <url> -- <tag> <csrf token> <csrf cookie> <url-encoded password>
--
-- The form's CSRF token and the csrftoken cookie come from one GET /signup/
-- made before the run; Django accepts the same pair on every request. The
-- address is <tag>-<thread>-<counter>@example.com. A 302 (the redirect to the
-- status page) is a sign-up; anything else is counted as bad, and done()
-- prints one RESULT line the benchmark parses.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  tag, token, password = args[1], args[2], args[4]
  counter, ok, bad, first_bad = 0, 0, 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Cookie"] = "csrftoken=" .. args[3]
end

function request()
  counter = counter + 1
  local body = string.format(
    "csrfmiddlewaretoken=%s&email=%s-%d-%d%%40example.com&password=%s&password_confirm=%s",
    token, tag, id, counter, password, password
  )
  return wrk.format("POST", "/signup/", nil, body)
end

function response(status, headers, body)
  if status == 302 then
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
