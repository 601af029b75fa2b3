-- wrk script for `make bench`: a small non-streaming chat completion POST.
-- env: BENCH_MODEL, BENCH_KEY. Prints one `BENCHWRK {json}` line (latencies in microseconds).
local model = os.getenv("BENCH_MODEL") or "bench/bench-model"
local key = os.getenv("BENCH_KEY") or "sk-anything"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"model":"' .. model .. '","max_tokens":32,"messages":[{"role":"user","content":"Say hello in five words."}]}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHWRK {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
