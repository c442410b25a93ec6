-- wrk script: each request takes the next presigned path of the file $URLS (one per line).
-- METHOD=PUT sends a 64 KiB body (a PUT URL list is reused when exhausted: the repeated PUT
-- stores identical bytes again). RANGE_OF=<bytes> asks for a random 64 KiB range of an object
-- of that size instead of the whole object.
local urls = {}
local method = os.getenv("METHOD") or "GET"
local range_of = tonumber(os.getenv("RANGE_OF") or "")
local body = nil
local next_url = 0

function init(args)
  for line in io.lines(os.getenv("URLS")) do
    urls[#urls + 1] = line
  end
  if method == "PUT" then
    body = string.rep("d", 65536)
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  next_url = math.random(#urls)
end

function request()
  next_url = next_url % #urls + 1
  local headers = {}
  if range_of then
    local start = math.random(0, range_of / 65536 - 1) * 65536
    headers["Range"] = "bytes=" .. start .. "-" .. (start + 65535)
  end
  return wrk.format(method, urls[next_url], headers, body)
end

function done(summary, latency, requests)
  io.stderr:write(string.format("RESULT rps=%.1f p99_ms=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
