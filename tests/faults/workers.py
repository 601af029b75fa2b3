"""Celery worker processes a fault test owns (and may SIGKILL), and usage seeded through real holds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from tests.production.procs import ROOT, subprocess_env


class Worker:
    """`celery worker -B` (solo pool) in its own process group, with its own beat schedule file."""

    def __init__(self, **env: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="sy-worker-")
        cmd = [sys.executable, "-m", "celery", "-A", "switchyard", "worker", "-B", "--pool", "solo"]
        cmd += ["--concurrency", "1", "--loglevel", "WARNING", "-s", str(Path(self.dir) / "beat")]
        self.log = open(Path(self.dir) / "log", "wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=subprocess_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self) -> set[int]:
        """The worker and its embedded beat: every process of its group."""
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True).stdout
        return {int(p) for p in out.split()}

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def output(self) -> str:
        return (Path(self.dir) / "log").read_text(errors="replace")


def seed_usage(org_id: int, key_id: int | None, count: int, cost_units: int = 17_900_000) -> list[str]:
    """Place and settle `count` holds as the gateway does (queuing `count` usage events); their ids."""
    from billing.holds import _org_snapshot, hold_place, hold_settle, org_hash, scripts
    from switchyard.shared import reset_clients

    # The organisation's Redis mirror first, here (not from many threads inside hold_place).
    balance, version = _org_snapshot(org_id)
    scripts.sync("INIT_LUA")(keys=[org_hash(org_id)], args=[str(balance), str(version)])

    async def one(i: int, tag: str) -> str:
        hold = await hold_place(org_id=org_id, key_id=key_id, amount_units=cost_units * 2)
        gen = f"gen-seed-{tag}-{i}"
        event = {
            "gen": gen,
            "org": org_id,
            "key": key_id,
            "hold": hold.id,
            "model": "switchyard/sim-1",
            "provider": "simulated",
            "kind": "chat",
            "status": "success",
            "tokens": {"prompt": 11, "completion": 42},
            "cost": cost_units,
            "created": time.time(),
        }
        await hold_settle(hold, cost_units=cost_units, event=orjson.dumps(event), generation_id=gen)
        return gen

    async def run() -> list[str]:
        tag = os.urandom(4).hex()
        ids: list[str] = []
        for start in range(0, count, 200):
            ids += await asyncio.gather(*(one(i, tag) for i in range(start, min(start + 200, count))))
        return ids

    reset_clients()
    try:
        return asyncio.run(run())
    finally:
        reset_clients()
