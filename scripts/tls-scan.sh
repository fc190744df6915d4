#!/usr/bin/env bash
# `make tls-scan`: starts the release server with HTTPS on loopback and scans
# it with testssl.sh (Debian package `testssl.sh`), once with an ECDSA P-256
# certificate (what `--tls acme` obtains) and once with RSA 2048 (what many
# `--tls files` users bring). Fails if any protocol below TLS 1.2 or any
# weak cipher category is offered.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in testssl openssl python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "tls-scan needs $tool (apt-get install testssl.sh)" >&2
    exit 1
  fi
done

bin=target/release/notesd
work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

scan() {
  local name=$1; shift
  openssl req -x509 -newkey "$@" -nodes -days 7 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/$name-key.pem" -out "$work/$name-cert.pem" 2>/dev/null
  local port
  port=$(free_port)
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data-$name" \
    --tls files --tls-cert "$work/$name-cert.pem" --tls-key "$work/$name-key.pem" \
    2>"$work/$name-server.log" &
  server=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  echo "== $name certificate: testssl -p -s -f -E -U 127.0.0.1:$port"
  testssl --quiet --color 0 --warnings batch -p -s -f -E -U \
    --jsonfile "$work/$name.json" "127.0.0.1:$port" >"$work/$name.txt" 2>&1 || true
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  python3 - "$work/$name.json" <<'PY'
import json, sys
findings = {f["id"]: f["finding"] for f in json.load(open(sys.argv[1]))}
must_be_absent = ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "cipherlist_NULL", "cipherlist_aNULL",
                  "cipherlist_EXPORT", "cipherlist_LOW", "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"]
bad = [k for k in must_be_absent if not findings.get(k, "").startswith("not offered")]
offered = [k for k in ("TLS1_2", "TLS1_3") if findings.get(k, "").startswith("offered")]
ciphers = sorted({v.split()[3] for k, v in findings.items() if k.startswith("cipher-tls")})
vulnerable = [k for k, v in findings.items() if "VULNERABLE" in v.upper() and "NOT VULNERABLE" not in v.upper()]
print("protocols offered:", ", ".join(offered) or "none")
print("below TLS 1.2 and weak cipher categories:", "none offered" if not bad else "OFFERED: " + ", ".join(bad))
print("cipher suites:", " ".join(ciphers))
print("ALPN:", findings.get("ALPN_HTTP2", "?"), findings.get("ALPN", ""))
print("vulnerability checks flagged:", ", ".join(vulnerable) or "none")
sys.exit(1 if bad or vulnerable or len(offered) != 2 else 0)
PY
}

scan ecdsa ec -pkeyopt ec_paramgen_curve:P-256
scan rsa rsa:2048
echo "tls-scan: OK"
