"""Smoke-test a running deployment: health, readiness, a completion, a stream, and the books settling.

    python deploy/smoke.py --url http://localhost:8000 --key sk-sy-v1-... [--metrics-url URL] [--n 50]

Stdlib only, so it runs anywhere (inside a container too). Exits non-zero naming the first failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def call(url: str, body: dict | None = None, key: str = "", timeout: float = 30) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        sys.exit(1)


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://localhost:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", default="switchyard/sim-1")
    parser.add_argument("--metrics-url", default="", help="a web process's /metrics (default: URL/metrics)")
    parser.add_argument("--n", type=int, default=50, help="concurrent requests in the load step")
    args = parser.parse_args()
    api = args.url.rstrip("/") + "/api/v1"
    msgs = [{"role": "user", "content": "smoke test"}]

    status, body, _ = call(args.url + "/healthz")
    check(status == 200, f"/healthz {status}")
    status, body, _ = call(args.url + "/readyz")
    check(status == 200, f"/readyz {status} {body.decode()[:200]}")
    status, body, headers = call(api + "/chat/completions", {"model": args.model, "messages": msgs}, args.key)
    check(status == 200 and json.loads(body)["usage"]["cost"] >= 0, f"chat completion {status}")
    gen_id = headers.get("x-generation-id") or headers.get("X-Generation-Id")
    stream = {
        "model": args.model,
        "messages": msgs,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, body, _ = call(api + "/chat/completions", stream, args.key)
    check(
        status == 200 and body.rstrip().endswith(b"data: [DONE]") and b'"usage"' in body, f"stream {status}"
    )

    def one(_: int) -> int:
        return call(api + "/chat/completions", {"model": args.model, "messages": msgs}, args.key)[0]

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(args.n)))
    check(statuses.count(200) == args.n, f"{args.n} concurrent completions: {sorted(set(statuses))}")

    deadline = time.monotonic() + 60
    while True:  # the Celery worker drains the usage stream into the ledger
        status, body, _ = call(api + f"/generation?id={gen_id}", key=args.key)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    check(
        status == 200 and json.loads(body)["data"]["id"] == gen_id,
        f"generation recorded by the worker {status}",
    )
    metrics_url = args.metrics_url or args.url + "/metrics"
    status, body, _ = call(metrics_url)
    if status == 200:
        text = body.decode()
        check((metric(text, "switchyard_requests_total") or 0) > 0, "metrics count requests")
        while (metric(text, "switchyard_usage_queue_depth") or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            text = call(metrics_url)[1].decode()
        check(metric(text, "switchyard_usage_queue_depth") == 0, "usage queue drained")
        check(metric(text, "switchyard_holds_outstanding") == 0, "no holds outstanding")
    else:
        print(f"skip metrics: {metrics_url} answered {status} (token or network setting)")
    print("smoke test passed")


if __name__ == "__main__":
    main()
