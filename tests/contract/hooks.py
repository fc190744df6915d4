"""schemathesis hooks of the contract run: the known false positives.

Each hook drops one precisely described kind of failure and nothing else;
everything they drop is counted in the run's summary ("dropped by
`filter_failure`"). The server's answer in each case is the correct one and
no schema could tell schemathesis so.
"""

from __future__ import annotations

import json

import schemathesis


def _problem_fields(response) -> set[str] | None:
    """The `field`s of a validation problem's `errors`, or None if it is not one."""
    try:
        body = json.loads(response.content)
    except (ValueError, TypeError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return None
    return {e.get("field") for e in body["errors"] if isinstance(e, dict)}


def _header(case, name: str):
    for key, value in (case.headers or {}).items():
        if key.lower() == name:
            return value
    return None


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure except the five below (return False to drop)."""
    # 3. negative_data_rejection ("Schema-violating request accepted", ST201)
    #    with 413: a schema-violating body (e.g. `content` over its maxLength
    #    plus generated junk) that is also over the server's body limit
    #    (1 MiB) is refused by that limit before it is parsed. 413 is a
    #    refusal; schemathesis's list of refusal statuses just lacks it.
    if failure.code == "ST201" and response.status_code == 413:
        return False

    if failure.code != "ST202":  # positive_data_acceptance: "Schema-valid request rejected"
        return True

    # 1. `If-Match` is a free-form string in the document, and rightly so:
    #    any value other than the note's current strong ETag (made up, weak
    #    `W/"..."`, empty) must fail the precondition, and 412 is declared
    #    for these operations. `If-Match: *` must never get 412 on an
    #    existing note, so that one is kept.
    if response.status_code == 412:
        if_match = _header(case, "if-match")
        if if_match is not None and str(if_match).strip() != "*":
            return False

    # 2. A password change with a generated `current_password`: any string
    #    may be a password, so the schema allows it, but only the account's
    #    own is accepted; the server answers 400 naming that member (and
    #    `new_password` when a generated one equals the current one).
    if response.status_code == 400 and case.operation.path == "/api/v1/me/password":
        if _problem_fields(response) in ({"current_password"}, {"new_password"}):
            return False

    # 4. The same for deleting the account: a generated `password` is not
    #    the account's, and the server answers 400 naming `password`.
    if (
        response.status_code == 400
        and case.operation.path == "/api/v1/me"
        and case.operation.method.lower() == "delete"
        and _problem_fields(response) == {"password"}
    ):
        return False

    # 5. The same for the second factor's changes: a generated `password`
    #    is not the account's, and a generated `code` is not the app's
    #    current code nor an unused recovery code; the server answers 400
    #    naming that one member.
    if (
        response.status_code == 400
        and case.operation.path.startswith("/api/v1/me/mfa/")
        and _problem_fields(response) in ({"password"}, {"code"})
    ):
        return False

    return True
