-- citygate benchmark: wrk replays the city-mix requests
-- (cargo bench-gateway --only city-mix writes them; see
-- host-tests/src/bin/bench-gateway/city_mix.rs).
--
-- The file holds whole HTTP/1.1 messages, each preceded by its length in
-- bytes and a newline; wrk sends them in order, round and round, so every
-- variant gets the same bytes. `done` prints one JSON line the driver reads.

local messages = {}
local next_message = 1

function init(args)
  local path = args[1]
  local file = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local data = file:read("*a")
  file:close()
  local pos = 1
  while pos <= #data do
    local newline = data:find("\n", pos, true)
    if not newline then error("truncated request file " .. path) end
    local length = tonumber(data:sub(pos, newline - 1))
    if not length then error("bad length at byte " .. pos .. " of " .. path) end
    messages[#messages + 1] = data:sub(newline + 1, newline + length)
    pos = newline + length + 1
  end
  if #messages == 0 then error("no requests in " .. path) end
end

function request()
  local message = messages[next_message]
  next_message = next_message % #messages + 1
  return message
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"p99_9_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
