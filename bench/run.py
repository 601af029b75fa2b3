"""`make bench`: Switchyard's own end-to-end overhead benchmark (full mode: PostgreSQL + Redis).

Starts a mock OpenAI upstream, then each target in turn -- direct (the mock itself), ref-aiohttp
(a bare passthrough) and switchyard (uvicorn switchyard.asgi:application) -- and runs the same
scenarios against each: wrk c=1 and c=64 (non-streaming), streams at c=1 and c=32. Then it drains
the usage stream into the ledger and checks the books. See bench/README.md.

Environment (all optional):
  BENCH_DATABASE_URL  postgres://postgres@127.0.0.1:5432/switchyard_bench (created if missing)
  BENCH_REDIS_URL     redis://127.0.0.1:6379/12 (FLUSHDB at start)
  BENCH_TARGETS       direct,ref-aiohttp,switchyard
  BENCH_WORKERS       1 (gateway pinned to CPU 0, mock+loadgen to CPU 1) | 2 (no pinning)
  BENCH_DURATION      5    seconds per wrk scenario (after BENCH_WARMUP=2 s of discarded warm-up)
  BENCH_STREAMS_C1    300  BENCH_STREAMS_C32 1000  BENCH_EXACT_N 500 (exact-count plain phase)
  BENCH_MOCK_ARGS     extra mock flags, e.g. "--latency-ms 20 --chunk-delay-ms 5"
  BENCH_MOCK_PORT 9100  BENCH_GW_PORT 8100  BENCH_REF_PORT 8105
  BENCH_OUT           results directory (default bench/results/<date>/<time>-w<workers>)
  BENCH_SETUP_ONLY=1  only prepare the database/catalog/org and print the key (for the shared harness;
                      set BENCH_MOCK_PORT to the harness mock's port, 9000)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
VENV_BIN = Path(PY).parent
MODEL = "bench/bench-model"
HZ = os.sysconf("SC_CLK_TCK")

_procs: list[subprocess.Popen[bytes]] = []


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Config:
    db: str = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/switchyard_bench")
    redis: str = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    targets: tuple[str, ...] = tuple(
        t for t in os.environ.get("BENCH_TARGETS", "direct,ref-aiohttp,switchyard").split(",") if t
    )
    workers: int = env_int("BENCH_WORKERS", 1)
    duration: int = env_int("BENCH_DURATION", 5)
    warmup: int = env_int("BENCH_WARMUP", 2)
    streams_c1: int = env_int("BENCH_STREAMS_C1", 300)
    streams_c32: int = env_int("BENCH_STREAMS_C32", 1000)
    exact_n: int = env_int("BENCH_EXACT_N", 500)
    mock_args: str = os.environ.get("BENCH_MOCK_ARGS", "")
    mock_port: int = env_int("BENCH_MOCK_PORT", 9100)
    gw_port: int = env_int("BENCH_GW_PORT", 8100)
    ref_port: int = env_int("BENCH_REF_PORT", 8105)


CFG = Config()
PIN = CFG.workers == 1
GW_CPU, LOAD_CPU = "0", "1"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- processes ---------------------------------------------------------------------------------


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if PIN and shutil.which("taskset") else cmd


def start(
    cmd: list[str], logfile: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    out = open(logfile, "ab")
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
    )
    out.close()
    _procs.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the process group we started (uvicorn drains and runs lifespan shutdown), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    if proc in _procs:
        _procs.remove(proc)


def cleanup() -> None:
    for proc in list(_procs):
        try:
            stop(proc, timeout=10)
        except Exception:
            pass


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def tree(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 256:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu_ticks(pid: int | None) -> int:
    if not pid:
        return 0
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_mb(pid: int) -> tuple[float, list[float]]:
    """(whole tree, per process) VmRSS in MB."""
    each = []
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        each.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return round(sum(each), 1), [round(x, 1) for x in each]


def http(
    url: str, body: dict[str, Any] | None = None, key: str = "", timeout: float = 10
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def wait_ready(url: str, key: str, proc: subprocess.Popen[bytes] | None, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        if http(url, key=key, timeout=2)[0] == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {timeout}s: {url}")


# ---- setup -------------------------------------------------------------------------------------


def gateway_env() -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = dict(os.environ)
    env.update(
        DATABASE_URL=CFG.db,
        REDIS_URL=CFG.redis,
        DEBUG="0",
        SECRET_KEY="bench-secret-" + os.urandom(24).hex(),
        SWITCHYARD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        SECURE_SSL_REDIRECT="0",
        # The bench Redis is a throwaway (no append-only file), which full mode refuses by default.
        SWITCHYARD_REDIS_ALLOW_VOLATILE="1",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SETTINGS_MODULE="switchyard.settings",
    )
    env.pop("SWITCHYARD_TESTING", None)
    return env


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urllib.parse.urlparse(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log(f"created database {name}")


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res


def setup(env: dict[str, str], outdir: Path) -> dict[str, Any]:
    ensure_database(CFG.db)
    flush_redis(CFG.redis)
    manage(env, "migrate", "--noinput", "-v0")
    catalog = outdir / "catalog.yaml"
    catalog.write_text(
        (HERE / "catalog.yaml").read_text().replace("127.0.0.1:9100", f"127.0.0.1:{CFG.mock_port}")
    )
    log(manage(env, "load_catalog", str(catalog)).stdout.strip())
    slug = "bench"
    res = manage(env, "create_org", slug, "--owner", "bench@example.com", "--credits", "100000", check=False)
    if res.returncode != 0:  # `bench` exists from an earlier run: a fresh org keeps this run's books separate
        slug = "bench-" + datetime.now().strftime("%Y%m%d-%H%M%S")
        res = manage(env, "create_org", slug, "--owner", f"{slug}@example.com", "--credits", "100000")
    key = res.stdout.strip().splitlines()[-1]
    exact = (
        manage(env, "create_api_key", "--org", slug, "--name", "bench exact").stdout.strip().splitlines()[-1]
    )
    log(f"org {slug}: load key {key[:14]}..., exact-count key {exact[:14]}...")
    return {"org": slug, "keys": {"wrk": key, "exact": exact}}


# ---- scenarios ---------------------------------------------------------------------------------


def run_wrk(url: str, key: str, c: int, seconds: int, gw_pid: int | None, mock_pid: int) -> dict[str, Any]:
    env = dict(os.environ, BENCH_MODEL=MODEL, BENCH_KEY=key)
    g0, m0, t0 = cpu_ticks(gw_pid), cpu_ticks(mock_pid), time.monotonic()
    cmd = pinned(
        LOAD_CPU,
        ["wrk", "-t1", f"-c{c}", f"-d{seconds}s", "--timeout", "30s", "-s", str(HERE / "chat.lua"), url],
    )
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    dt = time.monotonic() - t0
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("BENCHWRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {res.stdout}\n{res.stderr}")
    w = json.loads(line.split(" ", 1)[1])
    errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"]
    return {
        "tool": "wrk",
        "c": c,
        "requests": w["requests"],
        "ok": w["requests"] - w["err_status"],
        "rps": round(w["requests"] * 1e6 / w["duration_us"], 1),
        "p50_ms": w["p50_us"] / 1000,
        "p90_ms": w["p90_us"] / 1000,
        "p99_ms": w["p99_us"] / 1000,
        "errors": errors,
        "gw_cpu": round((cpu_ticks(gw_pid) - g0) * 100 / HZ / dt) if gw_pid else None,
        "gw_cpu_us_per_req": round((cpu_ticks(gw_pid) - g0) * 1e6 / HZ / max(w["requests"], 1))
        if gw_pid
        else None,
        "mock_cpu": round((cpu_ticks(mock_pid) - m0) * 100 / HZ / dt),
        "raw": res.stdout,
    }


def run_loadgen(args: list[str], gw_pid: int | None, mock_pid: int, timeout: float = 600) -> dict[str, Any]:
    g0, m0, t0 = cpu_ticks(gw_pid), cpu_ticks(mock_pid), time.monotonic()
    res = subprocess.run(
        pinned(LOAD_CPU, [PY, str(HERE / "loadgen.py"), *args]),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    dt = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"loadgen failed: {res.stdout}\n{res.stderr}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    g1 = cpu_ticks(gw_pid)
    out["gw_cpu"] = round((g1 - g0) * 100 / HZ / dt) if gw_pid else None
    out["gw_cpu_us_per_req"] = (
        round((g1 - g0) * 1e6 / HZ / max(int(out.get("sent") or 0), 1)) if gw_pid else None
    )
    out["mock_cpu"] = round((cpu_ticks(mock_pid) - m0) * 100 / HZ / dt)
    out["tool"] = "loadgen"
    return out


def sanity(url: str, key: str) -> dict[str, Any]:
    msgs = [{"role": "user", "content": "hi"}]
    s1, b1 = http(url, {"model": MODEL, "messages": msgs}, key)
    s2, b2 = http(
        url,
        {"model": MODEL, "messages": msgs, "stream": True, "stream_options": {"include_usage": True}},
        key,
    )
    ok = (
        s1 == 200
        and b'"total_tokens"' in b1
        and s2 == 200
        and b"data: [DONE]" in b2
        and b'"total_tokens"' in b2
    )
    if not ok:
        raise RuntimeError(f"sanity check failed: plain {s1} {b1[:300]!r}; stream {s2} {b2[:300]!r}")
    return {"plain_status": s1, "stream_status": s2, "stream_events": b2.count(b"data: ")}


def bench_target(
    name: str, env: dict[str, str], keys: dict[str, str], mock_pid: int, outdir: Path
) -> dict[str, Any]:
    workers = str(CFG.workers)
    uv = [str(VENV_BIN / "uvicorn")]
    common = [
        "--host",
        "127.0.0.1",
        "--workers",
        workers,
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proc = None
    if name == "direct":
        base = f"http://127.0.0.1:{CFG.mock_port}/v1"
        ready = base + "/models"
    elif name == "ref-aiohttp":
        cmd = [*uv, "--app-dir", str(HERE), "ref_aiohttp:app", "--port", str(CFG.ref_port), *common]
        proc = start(
            pinned(GW_CPU, cmd),
            outdir / "ref-aiohttp.log",
            dict(os.environ, UPSTREAM=f"http://127.0.0.1:{CFG.mock_port}"),
        )
        base = f"http://127.0.0.1:{CFG.ref_port}/v1"
        ready = base + "/models"
    elif name == "switchyard":
        cmd = [*uv, "switchyard.asgi:application", "--port", str(CFG.gw_port), *common]
        proc = start(pinned(GW_CPU, cmd), outdir / "switchyard.log", env)
        base = f"http://127.0.0.1:{CFG.gw_port}/api/v1"
        ready = base + "/models"
    else:
        raise SystemExit(f"unknown target {name}")
    t0 = time.monotonic()
    wait_ready(ready, keys["wrk"], proc, timeout=120)
    startup = round(time.monotonic() - t0, 2)
    url = base + "/chat/completions"
    pid = proc.pid if proc else None
    res: dict[str, Any] = {"target": name, "startup_s": startup, "pid": pid}
    try:
        res["sanity"] = sanity(url, keys["exact"])
        warm = run_wrk(url, keys["wrk"], 8, CFG.warmup, pid, mock_pid)  # warm-up, discarded
        res["warmup_ok"] = warm["ok"]
        use_wrk = shutil.which("wrk") is not None
        for c in (1, 64):
            if use_wrk:
                res[f"wrk_c{c}"] = run_wrk(url, keys["wrk"], c, CFG.duration, pid, mock_pid)
            else:
                args = [
                    "plain",
                    "--url",
                    url,
                    "--key",
                    keys["wrk"],
                    "--model",
                    MODEL,
                    "-c",
                    str(c),
                    "--duration",
                    str(CFG.duration),
                ]
                res[f"wrk_c{c}"] = run_loadgen(args, pid, mock_pid)
            log(f"{name} c={c}: {res[f'wrk_c{c}']['rps']} req/s p50 {res[f'wrk_c{c}']['p50_ms']} ms")
        for c, n in ((1, CFG.streams_c1), (32, CFG.streams_c32)):
            args = [
                "stream",
                "--url",
                url,
                "--key",
                keys["exact"],
                "--model",
                MODEL,
                "-c",
                str(c),
                "-n",
                str(n),
            ]
            res[f"stream_c{c}"] = run_loadgen(args, pid, mock_pid)
            s = res[f"stream_c{c}"]
            log(
                f"{name} streams c={c}: {s['rps']} streams/s TTFC p50 {s['ttfc_p50_ms']} ms errors {s['errors']}"
            )
        if name == "switchyard" and CFG.exact_n:
            args = [
                "plain",
                "--url",
                url,
                "--key",
                keys["exact"],
                "--model",
                MODEL,
                "-c",
                "8",
                "-n",
                str(CFG.exact_n),
            ]
            res["exact_plain"] = run_loadgen(args, pid, mock_pid)
        if proc is not None:
            res["rss_mb"], res["rss_each_mb"] = rss_mb(proc.pid)
    finally:
        if proc is not None:
            stop(proc)
    return res


# ---- report ------------------------------------------------------------------------------------


def fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def report(results: dict[str, dict[str, Any]], books: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    direct = results.get("direct", {})
    ref = results.get("ref-aiohttp", {})
    d_p50 = direct.get("wrk_c1", {}).get("p50_ms")
    lines = [
        f"# Switchyard bench {meta['when']} ({meta['cpus']} CPUs, workers={CFG.workers}, "
        f"{'pinned gw=CPU0 mock+loadgen=CPU1' if PIN else 'no pinning'}, wrk {CFG.duration} s, "
        f"streams {CFG.streams_c1}/{CFG.streams_c32}, mock '{CFG.mock_args}')",
        "",
        "| target | c=1 p50 ms | c=1 p99 ms | added p50 ms | c=64 req/s | ÷ref | c=64 p99 ms | gw CPU c=64 "
        "| CPU µs/req c=64 | streams/s c=1 | TTFC p50 c=1 | streams/s c=32 | ÷ref | TTFC p50 / p99 c=32 "
        "| CPU µs/stream c=32 | errors | RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        c1, c64 = r.get("wrk_c1", {}), r.get("wrk_c64", {})
        s1, s32 = r.get("stream_c1", {}), r.get("stream_c32", {})
        added = c1["p50_ms"] - d_p50 if (d_p50 is not None and name != "direct" and c1) else None
        r64 = c64["rps"] / ref["wrk_c64"]["rps"] if ref.get("wrk_c64") and c64 else None
        r32 = s32["rps"] / ref["stream_c32"]["rps"] if ref.get("stream_c32") and s32 else None
        errs = sum(x.get("errors", 0) for x in (c1, c64, s1, s32, r.get("exact_plain", {})))
        r["added_p50_ms"], r["ratio_c64"], r["ratio_s32"], r["errors_total"] = added, r64, r32, errs
        lines.append(
            f"| {name} | {fmt(c1.get('p50_ms'))} | {fmt(c1.get('p99_ms'))} | {fmt(added, '+.2f')} "
            f"| {fmt(c64.get('rps'), '.0f')} | {fmt(r64)} | {fmt(c64.get('p99_ms'))} | {fmt(c64.get('gw_cpu'), 'd')}% | {fmt(c64.get('gw_cpu_us_per_req'), 'd')} "
            f"| {fmt(s1.get('rps'), '.0f')} | {fmt(s1.get('ttfc_p50_ms'))} | {fmt(s32.get('rps'), '.0f')} | {fmt(r32)} "
            f"| {fmt(s32.get('ttfc_p50_ms'))} / {fmt(s32.get('ttfc_p99_ms'))} | {fmt(s32.get('gw_cpu_us_per_req'), 'd')} | {errs} | {fmt(r.get('rss_mb'), '.1f')} |"
        )
    sw = results.get("switchyard")
    if sw:
        checks = [
            ("added p50 at c=1 <= 1.0 ms", sw["added_p50_ms"], lambda v: v is not None and v <= 1.0, "+.2f"),
            (
                "req/s at c=64 >= 0.40x ref-aiohttp",
                sw["ratio_c64"],
                lambda v: v is not None and v >= 0.40,
                ".2f",
            ),
            (
                "streams/s at c=32 >= 0.85x ref-aiohttp",
                sw["ratio_s32"],
                lambda v: v is not None and v >= 0.85,
                ".2f",
            ),
            ("RSS after load <= 100 MB", sw.get("rss_mb"), lambda v: v is not None and v <= 100, ".1f"),
            ("zero errors", sw["errors_total"], lambda v: v == 0, "d"),
        ]
        lines += ["", "| target (switchyard) | value | |", "|---|---:|---|"]
        for label, value, ok, spec in checks:
            lines.append(f"| {label} | {fmt(value, spec)} | {'PASS' if ok(value) else 'MISS'} |")
        if CFG.workers > 1:
            lines.append(f"\nRSS per process (master + workers): {sw.get('rss_each_mb')}")
    if books is not None and sw:
        exact_ok = 2 + sum(sw.get(k, {}).get("ok", 0) for k in ("stream_c1", "stream_c32", "exact_plain"))
        exact_sent = 2 + sum(sw.get(k, {}).get("sent", 0) for k in ("stream_c1", "stream_c32", "exact_plain"))
        wrk_ok = sw.get("warmup_ok", 0) + sum(sw.get(k, {}).get("ok", 0) for k in ("wrk_c1", "wrk_c64"))
        inflight = 8 + 1 + 64  # requests wrk may leave in flight when each of its 3 runs stops
        ex = books["per_key"].get("exact", {})
        wk = books["per_key"].get("wrk", {})
        wk_total = sum(wk.values())
        m = books.get("mirror", {})
        rows = [
            (
                "exact-count phases: generations written == requests sent",
                f"{sum(ex.values())} == {exact_sent}",
                sum(ex.values()) == exact_sent,
            ),
            (
                "exact-count phases: successful generations == successful responses",
                f"{ex.get('success', 0)} == {exact_ok}",
                ex.get("success", 0) == exact_ok,
            ),
            (
                f"wrk phases (warm-up, c=1, c=64): counted <= generations <= counted + {inflight} in flight at wrk's stops",
                f"{wrk_ok} <= {wk_total} (success {wk.get('success', 0)}) <= {wrk_ok + inflight}",
                wrk_ok <= wk.get("success", 0) and wk_total <= wrk_ok + inflight,
            ),
            (
                "usage ledger entries == charged generations",
                f"{books['usage_entries']} == {books['charged_generations']} (of {books['generations']})",
                books["usage_entries"] == books["charged_generations"],
            ),
            (
                "sum usage ledger == sum generation costs (picodollars)",
                f"{books['sum_usage_ledger_units']} == {books['sum_generation_cost_units']}",
                books["sum_usage_ledger_units"] == books["sum_generation_cost_units"],
            ),
            (
                "open holds == 0 (Redis zset / DB)",
                f"{books['open_holds_redis']} / {books['open_holds_db']}",
                books["open_holds_redis"] == 0 and books["open_holds_db"] == 0,
            ),
            (
                "Redis mirror balance == database balance",
                f"{m.get('bal')} vs {books['balance_units']}",
                books.get("mirror_bal_matches_db"),
            ),
            (
                "Redis mirror held == 0, pending == 0, usage stream empty",
                f"{m.get('held')} / {m.get('pending')} / {books['stream_left']}",
                m.get("held") == 0 and m.get("pending") == 0 and books["stream_left"] == 0,
            ),
        ]
        lines += [
            "",
            f"Books (drained {books['drained']} usage events in-process with billing.tasks.drain_once in {books['drain_seconds']} s):",
            "",
            "| check | value | |",
            "|---|---|---|",
        ]
        lines += [f"| {a} | {b} | {'OK' if c else 'FAIL'} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    when = datetime.now()
    outdir = Path(
        os.environ.get("BENCH_OUT")
        or HERE / "results" / when.strftime("%Y-%m-%d") / f"{when.strftime('%H%M%S')}-w{CFG.workers}"
    )
    outdir.mkdir(parents=True, exist_ok=True)
    env = gateway_env()
    try:
        log(f"results -> {outdir.relative_to(ROOT) if outdir.is_relative_to(ROOT) else outdir}")
        log(f"setup: database {CFG.db} redis {CFG.redis}")
        keys_spec = setup(env, outdir)
        if os.environ.get("BENCH_SETUP_ONLY"):
            print(keys_spec["keys"]["wrk"])
            return 0
        keys = keys_spec["keys"]
        mock_cmd = [
            PY,
            str(HERE / "mock_upstream.py"),
            "--port",
            str(CFG.mock_port),
            *shlex.split(CFG.mock_args),
        ]
        mock = start(pinned(LOAD_CPU, mock_cmd), outdir / "mock.log")
        wait_ready(f"http://127.0.0.1:{CFG.mock_port}/health", "", mock, timeout=15)
        results: dict[str, dict[str, Any]] = {}
        for name in CFG.targets:
            log(f"=== {name}")
            results[name] = bench_target(name, env, keys, mock.pid, outdir)
        mock_rss = rss_mb(mock.pid)[0]
        stop(mock)
        books = None
        if "switchyard" in results:
            log("draining the usage stream and checking the books")
            res = subprocess.run(
                [PY, str(HERE / "books.py")],
                cwd=ROOT,
                env=dict(env, BENCH_BOOKS=json.dumps(keys_spec)),
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if res.returncode != 0:
                raise RuntimeError(f"books check failed to run:\n{res.stdout}\n{res.stderr}")
            books = json.loads(res.stdout.strip().splitlines()[-1])
        meta = {"when": when.isoformat(timespec="seconds"), "cpus": os.cpu_count(), "mock_rss_mb": mock_rss}
        table = report(results, books, meta)
        raw = {"config": CFG, "meta": meta, "results": results, "books": books}
        with open(outdir / "raw.txt", "w") as f:  # wrk's own output, per target and scenario
            for name, r in results.items():
                for scen, v in r.items():
                    if isinstance(v, dict) and "raw" in v:
                        f.write(f"## {name} {scen}\n{v.pop('raw')}\n")
        (outdir / "results.json").write_text(json.dumps(raw, indent=1, default=str))
        (outdir / "summary.md").write_text(table)
        print()
        print(table)
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
