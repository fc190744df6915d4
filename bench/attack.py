#!/usr/bin/env python3
"""The attack scenarios of `make bench` (`BENCH_ONLY=attack`): three figures
that say whether one client can take the server's memory, its connections
or its CPU away from everyone else.

(a) Stalled readers: 64 connections each ask for a page of 100 maximal
    notes (100 000 characters of U+0001, which JSON escapes six-fold) and
    never read the answer. The server's RSS under that, against its quiet
    RSS and the bound its buffer settings promise.
(b) Connection share: one address (127.0.0.1) holds its whole share of
    connections, kept alive and idle (or trickling a header byte a second);
    a fresh client from 127.0.0.2 then times GET /healthz.
(c) Search flood: note reads from 8 clients alone, then while 16 clients
    flood `?q=zzz` searches over 2 000 notes of 50 000 "é"; the p99 ratio.

Each scenario starts its own server on one data directory that this script
seeds. Flags a binary does not list in `notesd serve --help` are not passed
(the figures are then the "before" numbers, and the script says so).
Loopback only; every wait is bounded. Python 3 standard library only.

Usage: bench/attack.py [--target-dir DIR] [--port N] [--duration 10s] ...
(see --help). `BENCH_ONLY=attack make bench` runs it alone; bench/run.sh
passes BENCH_ATTACK_ARGS through (e.g. `--hold-mode trickle`).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
# A second loopback address: a different client as far as the server can tell.
OTHER_HOST = "127.0.0.2"
PASSWORD = "bench otter cathedral"  # examples/bench_seed.rs
ESCAPED = "escaped@attack.test"
ACCENTED = "accented@attack.test"
READER = "reader@attack.test"
MIB = 1 << 20
KIB = 1 << 10

STALLED_READERS = 64
# Readers per loopback address: within the default per-client connection
# cap, so the buffer bounds, not that cap, are what holds.
READERS_PER_ADDRESS = 16
# What the bound allows per connection beyond its buffered response:
# socket, hyper and task state.
PER_CONNECTION_OVERHEAD = 128 * KIB


def main():
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    os.sched_setaffinity(0, {args.client_cpu})
    target = args.target_dir
    binary = os.path.join(target, "release", "notesd")
    seeder = os.path.join(target, "release", "examples", "bench_seed")
    for path in (binary, seeder):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is missing: cargo build --release --bin notesd --examples")
    if not shutil.which("wrk"):
        sys.exit("the attack bench needs wrk (apt-get install wrk)")

    work = tempfile.mkdtemp(prefix="notesd-attack-")
    try:
        data = os.path.join(work, "data")
        started = time.monotonic()
        subprocess.run(
            [seeder, data, f"{ESCAPED}:{args.escaped_notes}:escaped",
             f"{ACCENTED}:{args.accented_notes}:accented", f"{READER}:100"],
            check=True, stdout=subprocess.DEVNULL, timeout=600,
        )
        print(f"# attack: seeded {args.escaped_notes} escaped and {args.accented_notes} accented notes "
              f"in {time.monotonic() - started:.1f} s")
        help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True,
                                   check=True, timeout=30).stdout
        env = Env(binary, data, work, args, help_text)
        if "stalled" in args.scenarios:
            stalled_readers(env)
        if "share" in args.scenarios:
            connection_share(env)
        if "search" in args.scenarios:
            search_flood(env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "target"))
    p.add_argument("--port", type=int, default=18100)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1 if os.cpu_count() >= 2 else 0)
    p.add_argument("--duration", default="10s", help="each wrk run of (c)")
    p.add_argument("--scenarios", default="stalled,share,search",
                   help="comma-separated subset of stalled,share,search")
    p.add_argument("--escaped-notes", type=int, default=100)
    p.add_argument("--accented-notes", type=int, default=2000)
    # (a): the fixed server's settings, passed explicitly so the bound is
    # derived from what the server was told.
    p.add_argument("--max-page-bytes", type=int, default=1 * MIB)
    p.add_argument("--connection-buffer-bytes", type=int, default=2 * MIB)
    p.add_argument("--client-buffer-bytes", type=int, default=4 * MIB)
    p.add_argument("--max-buffered-bytes", type=int, default=128 * MIB)
    p.add_argument("--write-timeout", default="20s")
    p.add_argument("--hold", type=float, default=5.0,
                   help="(a): seconds at least that the readers stay stalled")
    p.add_argument("--rss-cap-mib", type=int, default=None,
                   help="(a): stop the attack early when the server's RSS passes this "
                        "(default: half the memory available, at most 8 GiB)")
    # (b)
    p.add_argument("--share", type=int, default=16, help="(b): --max-connections-per-client")
    p.add_argument("--hold-mode", choices=("idle", "trickle"), default="idle",
                   help="(b): holders stay idle after one request, or trickle a header byte a second")
    p.add_argument("--patience", type=float, default=75.0,
                   help="(b): seconds the fresh client waits at most (today's idle timeout is 60 s)")
    # (c)
    p.add_argument("--flood-connections", type=int, default=16)
    p.add_argument("--flood-delay-ms", type=int, default=20)
    p.add_argument("--results", metavar="TSV",
                   help="append each wrk run's figures to this file (bench/run.sh's rows for bench/chart.py)")
    args = p.parse_args()
    args.scenarios = set(args.scenarios.split(","))
    return args


class Env:
    """What every scenario needs: the binary, its data, its flags."""

    def __init__(self, binary, data, work, args, help_text):
        self.binary, self.data, self.work, self.args = binary, data, work, args
        self.help = help_text

    def supports(self, *flags):
        # Whole flags only: `--max-connections` is not `--max-connections-per-client`.
        return all(re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", self.help) for flag in flags)

    def server(self, name, extra):
        return Server(self, name, extra)


class Server:
    """A notesd pinned to the server core, rate limits off, stopped on exit."""

    def __init__(self, env, name, extra):
        self.env, self.name, self.extra = env, name, extra
        self.port = env.args.port

    def __enter__(self):
        args = self.env.args
        log = open(os.path.join(self.env.work, f"server-{self.name}.log"), "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(args.server_cpu), self.env.binary, "serve",
             "--listen", f"{HOST}:{self.port}", "--data-dir", self.env.data,
             "--rate-limit", "0", "--auth-rate-limit", "0", *self.extra],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NOTESD_LOG": "warn"},
        )
        log.close()
        for _ in range(100):
            if self.proc.poll() is not None:
                raise SystemExit(f"notesd exited at start ({self.name}); see its log:\n"
                                 + open(os.path.join(self.env.work, f"server-{self.name}.log")).read())
            try:
                if request(self.port, "GET", "/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            self.__exit__()
            raise SystemExit("notesd did not answer /healthz within 10 s")
        # taskset execs notesd: same pid.
        self.pid = self.proc.pid
        return self

    def __exit__(self, *_):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def memory(self):
        """VmRSS and VmHWM in bytes."""
        fields = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) * KIB
        return fields

    def login(self, email):
        status, body = request(self.port, "POST", "/api/v1/auth/login",
                               {"email": email, "password": PASSWORD})
        if status != 200:
            raise SystemExit(f"login {email}: {status} {body[:200]!r}")
        return json.loads(body)["access_token"]


def request(port, method, path, body=None, token=None, timeout=10):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"connection": "close"}
        if body is not None:
            headers["content-type"] = "application/json"
            body = json.dumps(body)
        if token:
            headers["authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def mb(n):
    return f"{n / MIB:.1f} MB"


# (a) -----------------------------------------------------------------------

def stalled_readers(env):
    a = env.args
    settings = ("--max-page-bytes", "--connection-buffer-bytes", "--client-buffer-bytes", "--max-buffered-bytes",
                "--write-timeout")
    if env.supports(*settings):
        extra = ["--max-page-bytes", str(a.max_page_bytes),
                 "--connection-buffer-bytes", str(a.connection_buffer_bytes),
                 "--client-buffer-bytes", str(a.client_buffer_bytes),
                 "--max-buffered-bytes", str(a.max_buffered_bytes),
                 "--write-timeout", a.write_timeout]
        note = ""
    else:
        extra = []
        note = " (not enforced: this binary has none of the flags, old defaults)"
        print(f"# attack: notesd serve lists none of {', '.join(settings)}: old defaults, no page or buffer limit")
    cap = a.rss_cap_mib * MIB if a.rss_cap_mib else min(8 << 30, available_memory() // 2)
    request_bytes = (f"GET /api/v1/notes?limit=100 HTTP/1.1\r\nHost: {HOST}\r\n"
                     "Authorization: Bearer {token}\r\n\r\n")
    with env.server("stalled", extra) as server:
        token = server.login(ESCAPED)
        time.sleep(1)
        quiet = server.memory()["VmRSS"]
        readers = []
        try:
            for i in range(STALLED_READERS):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                readers.append(s)
                # Four loopback addresses, 16 readers each: within the
                # default per-client connection cap, so the buffer bound,
                # not that cap, is what holds.
                s.bind((f"127.0.0.{10 + i // READERS_PER_ADDRESS}", 0))
                # Small before connect, so the advertised window stays small.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(5)
                s.connect((HOST, server.port))
                s.sendall(request_bytes.format(token=token).encode())
            # Held at least `hold` s, then until RSS stops growing (2 s
            # within 1 %), 30 s at most, or until it passes the cap.
            started = time.monotonic()
            samples = []
            capped = False
            while time.monotonic() - started < max(a.hold, 30):
                now = time.monotonic()
                rss = server.memory()["VmRSS"]
                samples.append((now, rss))
                if rss > cap:
                    capped = True
                    break
                past = [r for t, r in samples if now - t >= 2]
                if now - started >= a.hold and past and rss <= past[-1] * 1.01:
                    break
                time.sleep(0.2)
            held = time.monotonic() - started
            memory = server.memory()
        finally:
            for s in readers:
                s.close()
    clients = (STALLED_READERS + READERS_PER_ADDRESS - 1) // READERS_PER_ADDRESS
    bodies = min(a.max_buffered_bytes, clients * a.client_buffer_bytes, STALLED_READERS * max(a.max_page_bytes, MIB))
    bound = quiet + bodies + STALLED_READERS * PER_CONNECTION_OVERHEAD
    stopped = f", stopped at the {mb(cap)} cap" if capped else ""
    verdict = "over" if memory["VmHWM"] > bound else "within"
    print(f"{STALLED_READERS} stalled readers of {a.escaped_notes}-note \\u0001 pages, held {held:.0f} s{stopped}: "
          f"RSS {mb(memory['VmRSS'])}, peak {mb(memory['VmHWM'])} (quiet {mb(quiet)})")
    print(f"stalled-reader bound: quiet + min({mb(a.max_buffered_bytes)} server, {clients} clients x "
          f"{mb(a.client_buffer_bytes)}, {STALLED_READERS} x {mb(max(a.max_page_bytes, MIB))}) "
          f"+ {STALLED_READERS} x 128 KiB = {mb(bound)}; peak {verdict} it{note}")


def available_memory():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * KIB
    return 4 << 30


# (b) -----------------------------------------------------------------------

def connection_share(env):
    a = env.args
    if env.supports("--max-connections-per-client"):
        extra = ["--max-connections-per-client", str(a.share)]
        held_what = f"its share ({a.share})"
    else:
        # Today's server has only the global cap: holding it all is
        # holding the whole server.
        extra = ["--max-connections", str(a.share)]
        held_what = f"all {a.share} (--max-connections {a.share}: no --max-connections-per-client)"
    healthz = f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    with env.server("share", extra) as server:
        time.sleep(0.5)  # lets the start-up probe's connection go
        holders = []
        stop = threading.Event()
        trickler = None
        try:
            for _ in range(a.share):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                holders.append(s)
                s.bind((HOST, 0))
                s.settimeout(5)
                s.connect((HOST, server.port))
                s.sendall(healthz)
                read_response(s)
            if a.hold_mode == "trickle":
                trickler = threading.Thread(target=trickle, args=(holders, healthz, stop, a.patience))
                trickler.start()
            fresh = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                fresh.bind((OTHER_HOST, 0))
                fresh.settimeout(a.patience)
                started = time.monotonic()
                try:
                    fresh.connect((HOST, server.port))
                    fresh.sendall(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                    status = read_response(fresh)
                    elapsed = (time.monotonic() - started) * 1000
                    figure = f"{elapsed:.0f} ms (status {status})"
                except (TimeoutError, socket.timeout):
                    figure = f"> {a.patience * 1000:.0f} ms (not served)"
                except OSError as e:
                    figure = f"failed after {(time.monotonic() - started) * 1000:.0f} ms ({e})"
            finally:
                fresh.close()
        finally:
            stop.set()
            if trickler:
                trickler.join(timeout=5)
            for s in holders:
                s.close()
    mode = "kept alive, idle" if a.hold_mode == "idle" else "trickling a header byte a second"
    print(f"fresh client (127.0.0.2) GET /healthz while 127.0.0.1 holds {held_what} connections, "
          f"{mode}: {figure} (target <= 1000 ms)")


def trickle(holders, head, stop, limit):
    """Sends the next request head one byte a second on every holder."""
    for i in range(min(len(head) - 1, int(limit))):
        if stop.wait(1):
            return
        for s in holders:
            try:
                s.send(head[i:i + 1])
            except OSError:
                pass


def read_response(s):
    """Reads one response with a Content-Length body; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("connection closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    remaining = int(length.group(1)) - len(body) if length else 0
    while remaining > 0:
        chunk = s.recv(min(remaining, 65536))
        if not chunk:
            break
        remaining -= len(chunk)
    return status


# (c) -----------------------------------------------------------------------

def search_flood(env):
    a = env.args
    # Both wrk runs come from 127.0.0.1: one address, so the per-client
    # connection cap is lifted here; the per-account search cap and the
    # idle-priority scanning threads are what this measures.
    extra = ["--max-connections-per-client", "0"] if env.supports("--max-connections-per-client") else []
    with env.server("search", extra) as server:
        reader = server.login(READER)
        flooder = server.login(ACCENTED)
        status, body = request(server.port, "GET", "/api/v1/notes?limit=1", token=reader)
        note = json.loads(body)["items"][0]["id"]
        read_url = f"http://{HOST}:{server.port}/api/v1/notes/{note}"
        alone = wrk(a, "GET /notes/{id}, 8 clients, alone", read_url, 8, a.duration, reader)
        seconds = parse_seconds(a.duration)
        # Open-loop-ish like run.sh's login flood: each connection sends a
        # search every FLOOD_DELAY ms (closed-loop wrk would measure how
        # fast refusals go out, not what searches cost the readers).
        script = os.path.join(env.work, "flood.lua")
        with open(script, "w") as f:
            f.write(f"function delay() return {a.flood_delay_ms} end\n")
        flood = subprocess.Popen(
            ["wrk", "-t1", f"-c{a.flood_connections}", f"-d{seconds + 2}s", "-s", script,
             "-H", f"Authorization: Bearer {flooder}",
             f"http://{HOST}:{server.port}/api/v1/notes?q=zzz&limit=100"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            time.sleep(1)
            flooded = wrk(a, "GET /notes/{id}, 8 clients, search flood", read_url, 8, a.duration, reader)
            flood_out, _ = flood.communicate(timeout=seconds + 60)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", flood_out)
    timeouts = re.search(r"timeout (\d+)", flood_out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", flood_out)
    print(f"search flood alongside ({a.flood_connections} clients, one search each per {a.flood_delay_ms} ms, q=zzz over {a.accented_notes} notes of "
          f"50000 \u00e9): {float(rps.group(1)) if rps else 0:.1f} req/s, "
          f"{non2xx.group(1) if non2xx else 0} non-2xx, {timeouts.group(1) if timeouts else 0} timed out (2 s)")
    print(f"GET p99 under the search flood / alone: {flooded / alone:.2f}x "
          f"({flooded:.2f} ms vs {alone:.2f} ms; target <= 3x)")


def wrk(a, name, url, connections, duration, token):
    """One wrk run; prints run.sh's summary line and returns p99 in ms."""
    text = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--latency", "-H", f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, check=True, timeout=parse_seconds(duration) + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", text)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = f"  non-2xx={non2xx.group(1)}" if non2xx else ""
    print(f"{name:<34} {rps:>10.0f} req/s   p50 {pct(50):>7.2f} ms   p99 {pct(99):>7.2f} ms{errors}", flush=True)
    if a.results:
        with open(a.results, "a") as f:
            f.write(f"{name}\t{rps:.2f}\t{pct(50):.4g}\t{pct(99):.4g}\t{connections}\n")
    return pct(99)


def parse_seconds(duration):
    m = re.fullmatch(r"(\d+)([smh]?)", duration)
    if not m:
        raise SystemExit(f"duration {duration!r}: expected e.g. 10s")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


if __name__ == "__main__":
    main()
