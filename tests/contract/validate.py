#!/usr/bin/env python3
"""Validate notesd's OpenAPI document with openapi-spec-validator.

Usage:
  validate.py http://127.0.0.1:8080        # fetches <base>/openapi.json
  validate.py path/to/openapi.json         # a file (e.g. `notesd openapi > f`)
  validate.py -                            # the document on standard input

Prints every error found (not only the first) and exits 1 if there is any.

Besides the structure (openapi-spec-validator), every `example` in the
document (schemas, parameters, media types) must be valid against the schema
it illustrates: OpenAPI 3.0 says it SHOULD be, and Swagger UI, client
generators and schemathesis's examples phase all use them as real requests.
"""

import json
import sys
import urllib.request

from openapi_schema_validator import OAS30Validator, OAS31Validator
from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator


def load(source: str) -> dict:
    if source == "-":
        return json.load(sys.stdin)
    if source.startswith(("http://", "https://")):
        url = source.rstrip("/")
        if not url.endswith(".json"):
            url += "/openapi.json"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    with open(source, encoding="utf-8") as f:
        return json.load(f)


def example_errors(doc: dict, schema_validator) -> list[str]:
    """Every `example`/`examples` value that its own schema rejects."""
    components = doc.get("components", {})

    def check(where: str, schema, value) -> list[str]:
        if not isinstance(schema, dict):
            return []
        root = dict(schema)
        root["components"] = components  # so `#/components/...` refs resolve
        return [
            f"{where}: example does not match its schema: {e.message}"
            + (f" (at /{'/'.join(map(str, e.absolute_path))})" if e.absolute_path else "")
            for e in schema_validator(root).iter_errors(value)
        ]

    errors: list[str] = []
    for name, schema in components.get("schemas", {}).items():
        if isinstance(schema, dict) and "example" in schema:
            errors += check(f"components/schemas/{name}", schema, schema["example"])

    def media_and_params(where: str, obj: dict) -> None:
        nonlocal errors
        for i, param in enumerate(obj.get("parameters", []) or []):
            if isinstance(param, dict) and "example" in param:
                errors += check(f"{where}/parameters/{i}", param.get("schema"), param["example"])
        contents = []
        if isinstance(obj.get("requestBody"), dict):
            contents.append(("requestBody", obj["requestBody"].get("content", {})))
        for status, resp in (obj.get("responses") or {}).items():
            if isinstance(resp, dict):
                contents.append((f"responses/{status}", resp.get("content", {})))
        for label, content in contents:
            for mt, media in (content or {}).items():
                if not isinstance(media, dict):
                    continue
                if "example" in media:
                    errors += check(f"{where}/{label}/{mt}", media.get("schema"), media["example"])
                for ex_name, ex in (media.get("examples") or {}).items():
                    if isinstance(ex, dict) and "value" in ex:
                        errors += check(f"{where}/{label}/{mt}/examples/{ex_name}", media.get("schema"), ex["value"])

    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if isinstance(op, dict):
                media_and_params(f"paths/{path}/{method}", op)
    return errors


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        doc = load(sys.argv[1])
    except Exception as exc:  # noqa: BLE001
        print(f"validate: cannot load the document: {exc}", file=sys.stderr)
        return 1
    version = str(doc.get("openapi", ""))
    if version.startswith("3.0"):
        validator = OpenAPIV30SpecValidator(doc)
    elif version.startswith("3.1"):
        validator = OpenAPIV31SpecValidator(doc)
    else:
        print(f"validate: unsupported or missing `openapi` version {version!r}", file=sys.stderr)
        return 1
    errors = list(validator.iter_errors())
    for err in errors:
        path = "/".join(str(p) for p in getattr(err, "absolute_path", []) or [])
        print(f"validate: ERROR at /{path}: {err.message}")
    if not errors:  # examples can only be judged in a well-formed document
        bad_examples = example_errors(doc, OAS30Validator if version.startswith("3.0") else OAS31Validator)
        for msg in bad_examples:
            print(f"validate: ERROR at /{msg}")
        errors += bad_examples
    if errors:
        print(f"validate: {len(errors)} error(s) in the OpenAPI {version} document")
        return 1
    paths = doc.get("paths", {})
    ops = sum(
        1
        for item in paths.values()
        for m in item
        if m in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    )
    print(f"validate: OpenAPI {version} document is valid ({len(paths)} paths, {ops} operations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
