#!/usr/bin/env python3
"""Start-up and idle memory figures of a notesd release binary (`make bench`).

Usage: startup.py --binary BIN --seed BENCH_SEED --data DIR [--port P] [--runs N]

- Cold start: the time from exec to the first 200 on /healthz, on DIR (a
  data directory the bench seeded, 101 000 notes), median of N starts.
- Memory: on a fresh data directory holding one account (made with
  BENCH_SEED, not through the server), the server's RSS once it has settled
  (the start's hashing done), after 10 logins, and 7 s after the last one;
  then after a signup (which loads the password-strength dictionaries) and
  7 s more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

PASSWORD = "bench otter cathedral"


def environment(key: str | None) -> dict[str, str]:
    """The caller's environment, quiet; with `key`, that master key file
    and no other NOTESD_ setting."""
    env = dict(os.environ)
    if key is not None:
        env = {k: v for k, v in env.items() if not k.startswith("NOTESD_")}
        env["NOTESD_MASTER_KEY_FILE"] = key
    env["NOTESD_LOG"] = "warn"
    return env


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def serve(binary: str, data: str, port: int, env: dict[str, str], *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, *flags],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def cold_start(binary: str, data: str, port: int, runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        server = serve(binary, data, port, env)
        while not healthy(port):
            if server.poll() is not None:
                raise SystemExit(f"the server stopped (exit {server.returncode})")
            time.sleep(0.0005)
        times.append((time.perf_counter() - started) * 1000)
        server.terminate()
        server.wait()
    return sorted(times)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS")


def post(port: int, path: str, body: dict) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        return resp.status


def memory(binary: str, seed: str, port: int, env: dict[str, str], work: str) -> dict[str, float]:
    data = os.path.join(work, "memory")
    subprocess.run([seed, data, "memory@bench.test:10"], env=env, check=True, stdout=subprocess.DEVNULL)
    server = serve(binary, data, port, env, "--auth-rate-limit", "0")
    try:
        while not healthy(port):
            time.sleep(0.01)
        time.sleep(7)
        figures = {"settled": rss_mb(server.pid)}
        login = {"email": "memory@bench.test", "password": PASSWORD}
        for _ in range(10):
            post(port, "/api/v1/auth/login", login)
        figures["after 10 logins"] = rss_mb(server.pid)
        time.sleep(7)
        figures["7 s after the logins"] = rss_mb(server.pid)
        post(port, "/api/v1/auth/signup", {"email": "new@bench.test", "password": PASSWORD})
        time.sleep(7)
        figures["7 s after a signup"] = rss_mb(server.pid)
        return figures
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--seed", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--port", type=int, default=18300)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="notesd-startup.")
    try:
        # The seeded data opens with the caller's master key.
        times = cold_start(args.binary, args.data, args.port, args.runs, environment(None))
        median = times[len(times) // 2]
        size = os.path.getsize(os.path.join(args.data, "notesd.redb")) / 1e6
        print(
            f"cold start to the first 200 on /healthz, a {size:.0f} MB database: median {median:.1f} ms "
            f"(min {times[0]:.1f}, max {times[-1]:.1f}, {len(times)} starts)"
        )
        figures = memory(args.binary, args.seed, args.port, environment(os.path.join(work, "memory.key")), work)
        settled = figures["settled"]
        print(
            "server RSS: "
            + ", ".join(f"{name} {mb:.1f} MB" for name, mb in figures.items())
            + f"; back within {figures['7 s after the logins'] - settled:+.1f} MB of settled after logins, "
            f"{figures['7 s after a signup'] - settled:+.1f} MB after a signup"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
