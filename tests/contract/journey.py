#!/usr/bin/env python3
"""A user's journey through a client generated from notesd's OpenAPI document.

Usage: journey.py BASE_URL CLIENT_DIR

CLIENT_DIR holds the package `notesd_client` that openapi-python-client
generated (`--meta none --output-path CLIENT_DIR/notesd_client`). Every call
goes through the generated, typed API and every answer is parsed into the
generated models; nothing here speaks HTTP by hand. Response headers (ETag,
Location) are not modelled by the generator, so they are read from the
generated `Response.headers`.

Besides the status of each step, every parsed answer is checked strictly
against the document: no member the model does not define
(`additional_properties` empty) and each attribute of the Python type the
generator gave it (a `str` field holding `None` is a failure).

Exit status 0 if every step passed, 1 otherwise (all steps run; a step that
depends on a failed one is skipped).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import secrets
import struct
import time
import sys
import types
import typing
import uuid

failures: list[str] = []
passed = 0


def check(cond: bool, what: str) -> bool:
    global passed
    if cond:
        passed += 1
        print(f"  ok    {what}")
    else:
        failures.append(what)
        print(f"  FAIL  {what}")
    return cond


class Skip(Exception):
    pass


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    base, client_dir = sys.argv[1].rstrip("/"), sys.argv[2]
    sys.path.insert(0, client_dir)

    import attrs
    from notesd_client import AuthenticatedClient, Client, models
    from notesd_client.api.auth import list_keys, login, login_second_factor, logout, signup
    from notesd_client.api.admin import admin_list_users
    from notesd_client.api.me import (
        change_password,
        confirm_totp,
        enrol_totp,
        delete_me,
        end_other_sessions,
        end_session,
        export_notes,
        get_me,
        list_my_events,
        list_sessions,
    )
    from notesd_client.api.notes import (
        create_note,
        delete_note,
        get_note,
        list_notes,
        patch_note,
        replace_note,
    )
    from notesd_client.api.operations import healthz
    from notesd_client.models import (
        AccountDeletion,
        CodeOnly,
        MfaChallenge,
        PasswordOnly,
        RecoveryCodes,
        SecondStep,
        TotpEnrolment,
        EventPage,
        Health,
        KeySet,
        LoginRequest,
        Note,
        NoteInput,
        NotePage,
        NotePatch,
        NotesExport,
        PasswordChange,
        Problem,
        SessionPage,
        SignupBody,
        SignupRequest,
        TokenPairBody,
        UserProfile,
    )
    from notesd_client.types import Unset

    hints_cache: dict[type, dict[str, typing.Any]] = {}

    def hints(cls: type) -> dict[str, typing.Any]:
        if cls not in hints_cache:
            ns = dict(vars(models))
            ns.update(vars(sys.modules[cls.__module__]))
            ns.update({"Unset": Unset, "datetime": datetime, "UUID": uuid.UUID})
            hints_cache[cls] = typing.get_type_hints(cls, globalns=ns)
        return hints_cache[cls]

    def type_ok(value: typing.Any, tp: typing.Any) -> bool:
        if tp is typing.Any:
            return True
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            return any(type_ok(value, arg) for arg in typing.get_args(tp))
        if origin is list:
            (item,) = typing.get_args(tp) or (typing.Any,)
            return isinstance(value, list) and all(type_ok(v, item) for v in value)
        if origin is dict:
            return isinstance(value, dict)
        if tp is type(None):
            return value is None
        if tp is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if isinstance(tp, type):
            return isinstance(value, tp)
        return True

    def conforms(obj: typing.Any, path: str) -> list[str]:
        """Where a parsed model strays from its generated type."""
        problems: list[str] = []
        if not attrs.has(type(obj)):
            return problems
        extra = getattr(obj, "additional_properties", {})
        if extra:
            problems.append(f"{path}: members the document does not define: {sorted(extra)}")
        for field in attrs.fields(type(obj)):
            if field.name == "additional_properties":
                continue
            value = getattr(obj, field.name)
            tp = hints(type(obj)).get(field.name, typing.Any)
            if not type_ok(value, tp):
                problems.append(f"{path}.{field.name}: {value!r} is not {tp}")
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                sub = f"{path}.{field.name}[{i}]" if isinstance(value, list) else f"{path}.{field.name}"
                problems += conforms(item, sub)
        return problems

    def expect(step: str, resp: typing.Any, status: int, model: type | None) -> typing.Any:
        """The step answered `status` with a body that parses as `model` and conforms."""
        got = int(resp.status_code)
        ok = check(got == status, f"{step}: status {got}, expected {status}")
        if model is None:
            ok &= check(resp.parsed is None, f"{step}: no body parsed ({resp.content[:80]!r})")
        else:
            parsed = resp.parsed
            ok &= check(
                isinstance(parsed, model),
                f"{step}: body parsed as {type(parsed).__name__}, expected {model.__name__}",
            )
            if isinstance(parsed, model):
                problems = conforms(parsed, model.__name__)
                for p in problems:
                    check(False, f"{step}: {p}")
                ok &= not problems
                if isinstance(parsed, Problem):
                    ok &= check(parsed.status == status, f"{step}: Problem.status {parsed.status} == {status}")
        if not ok:
            print(f"        answer: {got} {dict(resp.headers)!r}\n        body: {resp.content[:500]!r}")
            raise Skip(step)
        return resp.parsed

    email = f"journey-{secrets.token_hex(6)}@example.com"
    password = f"journey {secrets.token_hex(8)} pelican lantern"
    anon = Client(base_url=base, raise_on_unexpected_status=True, timeout=30)

    steps: list[tuple[str, typing.Callable[[], None]]] = []
    state: dict[str, typing.Any] = {}

    def step(fn: typing.Callable[[], None]) -> typing.Callable[[], None]:
        steps.append((fn.__name__, fn))
        return fn

    @step
    def healthz_ok() -> None:
        h = expect("GET /healthz", healthz.sync_detailed(client=anon), 200, Health)
        check(h.status == "ok", "GET /healthz: status ok")

    @step
    def keys() -> None:
        ks = expect("GET /auth/keys", list_keys.sync_detailed(client=anon), 200, KeySet)
        check(len(ks.keys) >= 1, "GET /auth/keys: at least one key")

    @step
    def sign_up() -> None:
        body = expect(
            "POST /auth/signup",
            signup.sync_detailed(client=anon, body=SignupRequest(email=email, password=password)),
            201,
            SignupBody,
        )
        check(body.user.email == email, "signup: the profile has the email")
        check(body.tokens.token_type == "Bearer", "signup: token_type Bearer")
        state["signup_token"] = body.tokens.access_token

    @step
    def log_in() -> None:
        pair = expect(
            "POST /auth/login",
            login.sync_detailed(client=anon, body=LoginRequest(email=email, password=password)),
            200,
            TokenPairBody,
        )
        state["token"] = pair.access_token
        state["client"] = AuthenticatedClient(
            base_url=base, token=pair.access_token, raise_on_unexpected_status=True, timeout=30
        )

    @step
    def me() -> None:
        profile = expect("GET /me", get_me.sync_detailed(client=state["client"]), 200, UserProfile)
        check(profile.email == email and profile.role == "user", "GET /me: own email, role user")

    @step
    def create() -> None:
        resp = create_note.sync_detailed(
            client=state["client"],
            body=NoteInput(title="Groceries", content="oat milk, lemons", tags=["home", "errands"]),
        )
        note = expect("POST /notes", resp, 201, Note)
        check(note.title == "Groceries" and note.tags == ["errands", "home"], "POST /notes: stored as sent")
        check(note.version == 1, "POST /notes: version 1")
        etag = resp.headers.get("etag")
        check(etag == '"1"', f"POST /notes: ETag {etag!r} == '\"1\"'")
        loc = resp.headers.get("location")
        check(loc == f"/api/v1/notes/{note.id}", f"POST /notes: Location {loc!r}")
        state["note"] = note

    @step
    def listing() -> None:
        page = expect("GET /notes", list_notes.sync_detailed(client=state["client"]), 200, NotePage)
        check([n.id for n in page.items] == [state["note"].id], "GET /notes: the one note")
        check(
            isinstance(page.next_cursor, Unset),
            f"GET /notes: no next_cursor on the last page (got {page.next_cursor!r})",
        )

    @step
    def get() -> None:
        resp = get_note.sync_detailed(state["note"].id, client=state["client"])
        note = expect("GET /notes/{id}", resp, 200, Note)
        check(note == state["note"], "GET /notes/{id}: the note as created")
        etag = resp.headers.get("etag")
        check(bool(etag), f"GET /notes/{{id}}: ETag {etag!r}")
        state["etag"] = etag

    @step
    def update() -> None:
        resp = replace_note.sync_detailed(
            state["note"].id,
            client=state["client"],
            body=NoteInput(title="Groceries", content="oat milk, lemons, rye bread", tags=["home"]),
            if_match=state["etag"],
        )
        note = expect("PUT /notes/{id} If-Match current", resp, 200, Note)
        check(note.version == 2 and note.tags == ["home"], "PUT: version 2, tags replaced")
        new_etag = resp.headers.get("etag")
        check(new_etag == '"2"' and new_etag != state["etag"], f"PUT: new ETag {new_etag!r}")

    @step
    def stale_put() -> None:
        resp = replace_note.sync_detailed(
            state["note"].id,
            client=state["client"],
            body=NoteInput(title="Lost update"),
            if_match=state["etag"],
        )
        expect("PUT /notes/{id} If-Match stale", resp, 412, Problem)

    @step
    def stale_patch() -> None:
        resp = patch_note.sync_detailed(
            state["note"].id, client=state["client"], body=NotePatch(title="Lost update"), if_match=state["etag"]
        )
        expect("PATCH /notes/{id} If-Match stale", resp, 412, Problem)

    @step
    def unchanged() -> None:
        note = expect(
            "GET /notes/{id} after 412s", get_note.sync_detailed(state["note"].id, client=state["client"]), 200, Note
        )
        check(note.title == "Groceries" and note.version == 2, "the 412s changed nothing")

    @step
    def delete() -> None:
        expect("DELETE /notes/{id}", delete_note.sync_detailed(state["note"].id, client=state["client"]), 204, None)

    @step
    def gone() -> None:
        p = expect(
            "GET /notes/{id} deleted", get_note.sync_detailed(state["note"].id, client=state["client"]), 404, Problem
        )
        check(p.errors is None or isinstance(p.errors, Unset), "404 Problem has no `errors`")

    @step
    def sessions() -> None:
        page = expect("GET /me/sessions", list_sessions.sync_detailed(client=state["client"]), 200, SessionPage)
        current = [s for s in page.items if s.current]
        check(len(page.items) >= 2 and len(current) == 1, "the caller's sessions, one of them current")
        other = next(s for s in page.items if not s.current)
        expect("DELETE /me/sessions/{id}", end_session.sync_detailed(other.id, client=state["client"]), 204, None)
        expect(
            "DELETE /me/sessions/{id} again",
            end_session.sync_detailed(other.id, client=state["client"]),
            404,
            Problem,
        )

    @step
    def other_sessions() -> None:
        expect("DELETE /me/sessions", end_other_sessions.sync_detailed(client=state["client"]), 204, None)
        signup_session = AuthenticatedClient(
            base_url=base, token=state["signup_token"], raise_on_unexpected_status=True, timeout=30
        )
        expect("GET /me with the signup session's token", get_me.sync_detailed(client=signup_session), 401, Problem)
        expect("GET /me with the caller's token", get_me.sync_detailed(client=state["client"]), 200, UserProfile)

    @step
    def new_password() -> None:
        fresh = f"journey {secrets.token_hex(8)} heron compass"
        body = PasswordChange(current_password=password, new_password=fresh)
        expect("PUT /me/password", change_password.sync_detailed(client=state["client"], body=body), 204, None)
        state["password"] = fresh
        wrong = PasswordChange(current_password=password, new_password=f"{fresh} again")
        expect(
            "PUT /me/password with the old password",
            change_password.sync_detailed(client=state["client"], body=wrong),
            400,
            Problem,
        )
        expect(
            "POST /auth/login with the new password",
            login.sync_detailed(client=anon, body=LoginRequest(email=email, password=fresh)),
            200,
            TokenPairBody,
        )

    @step
    def events() -> None:
        page = expect("GET /me/events", list_my_events.sync_detailed(client=state["client"]), 200, EventPage)
        kinds = [e.kind for e in page.items]
        check("password_changed" in kinds and "signup" in kinds, f"GET /me/events: own events ({kinds})")

    @step
    def export() -> None:
        doc = expect("GET /me/export", export_notes.sync_detailed(client=state["client"]), 200, NotesExport)
        fmt = getattr(doc, "format_", getattr(doc, "format", None))
        check(fmt == "notesd-export-1" and doc.account.email == email, "GET /me/export: the account")
        check(all(n.id != state["note"].id for n in doc.notes), "GET /me/export: no deleted note")

    @step
    def admin_forbidden() -> None:
        expect("GET /admin/users as a user", admin_list_users.sync_detailed(client=state["client"]), 403, Problem)

    @step
    def log_out() -> None:
        expect("POST /auth/logout", logout.sync_detailed(client=state["client"]), 204, None)

    @step
    def old_token() -> None:
        old = AuthenticatedClient(base_url=base, token=state["token"], raise_on_unexpected_status=True, timeout=30)
        expect("GET /me with the logged-out token", get_me.sync_detailed(client=old), 401, Problem)
        expect("GET /notes with the logged-out token", list_notes.sync_detailed(client=old), 401, Problem)

    def totp(secret_b32: str, at: float) -> str:
        """RFC 6238 (HMAC-SHA-1, 6 digits, 30 s) from the standard library."""
        key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
        mac = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
        offset = mac[-1] & 0x0F
        return f"{(struct.unpack('>I', mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"

    @step
    def two_factor() -> None:
        second = f"journey-mfa-{secrets.token_hex(6)}@example.com"
        body = expect(
            "POST /auth/signup (second account)",
            signup.sync_detailed(client=anon, body=SignupRequest(email=second, password=password)),
            201,
            SignupBody,
        )
        client = AuthenticatedClient(
            base_url=base, token=body.tokens.access_token, raise_on_unexpected_status=True, timeout=30
        )
        enrolment = expect(
            "POST /me/mfa/totp",
            enrol_totp.sync_detailed(client=client, body=PasswordOnly(password=password)),
            201,
            TotpEnrolment,
        )
        check(enrolment.otpauth_uri.startswith("otpauth://totp/"), "POST /me/mfa/totp: an otpauth URI")
        now = time.time()
        codes = expect(
            "POST /me/mfa/totp/confirm",
            confirm_totp.sync_detailed(client=client, body=CodeOnly(code=totp(enrolment.secret, now))),
            200,
            RecoveryCodes,
        )
        check(len(codes.recovery_codes) == 10, "confirm: ten recovery codes")
        challenge = expect(
            "POST /auth/login with the factor on",
            login.sync_detailed(client=anon, body=LoginRequest(email=second, password=password)),
            202,
            MfaChallenge,
        )
        # The confirming step is spent: the next one is within the window.
        step = SecondStep(mfa_token=challenge.mfa_token, code=totp(enrolment.secret, now + 30))
        pair = expect(
            "POST /auth/login/mfa", login_second_factor.sync_detailed(client=anon, body=step), 200, TokenPairBody
        )
        check(pair.token_type == "Bearer", "POST /auth/login/mfa: a token pair")

    @step
    def delete_account() -> None:
        pair = expect(
            "POST /auth/login before deleting",
            login.sync_detailed(client=anon, body=LoginRequest(email=email, password=state["password"])),
            200,
            TokenPairBody,
        )
        client = AuthenticatedClient(
            base_url=base, token=pair.access_token, raise_on_unexpected_status=True, timeout=30
        )
        wrong = AccountDeletion(password="not the password at all")
        expect("DELETE /me with a wrong password", delete_me.sync_detailed(client=client, body=wrong), 400, Problem)
        right = AccountDeletion(password=state["password"])
        expect("DELETE /me", delete_me.sync_detailed(client=client, body=right), 204, None)
        expect("GET /me after deleting", get_me.sync_detailed(client=client), 401, Problem)
        expect(
            "POST /auth/signup with the freed email",
            signup.sync_detailed(client=anon, body=SignupRequest(email=email, password=password)),
            201,
            SignupBody,
        )

    for name, fn in steps:
        print(f"journey: {name}")
        try:
            fn()
        except Skip as s:
            print(f"  (stopped at {s}; later steps that need it are skipped)")
            if name in ("log_in", "create", "get"):
                break
        except Exception as exc:  # noqa: BLE001 (a crash of the generated client is a finding too)
            check(False, f"{name}: {type(exc).__name__}: {exc}")
            if name in ("log_in", "create", "get"):
                break

    print(f"journey: {passed} passed, {len(failures)} failed")
    for f in failures:
        print(f"journey: FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
