"""bench/seed_api.py PORT: an account and 1 000 typical notes written through
the API of the server on 127.0.0.1:PORT (so any binary's own schema holds
them); prints "TOKEN NOTE_ID", the account's access token and its last
note. Used by bench/compare.sh and bench/instructions.sh."""

import http.client
import json
import sys

conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))


def call(method, path, body, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    conn.request(method, path, json.dumps(body), headers)
    return json.loads(conn.getresponse().read() or b"null")


signup = call("POST", "/api/v1/auth/signup", {"email": "small@bench.test", "password": "bench otter cathedral"})
token = signup["tokens"]["access_token"]
text = "Some text of a typical short note, a few lines long. " * 4
for i in range(1000):
    note = call("POST", "/api/v1/notes", {"title": f"note {i}", "content": text, "tags": ["bench"]}, token)
print(token, note["id"])
