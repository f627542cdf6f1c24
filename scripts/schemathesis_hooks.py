"""Schemathesis hooks for scripts/schemathesis.sh: the failures it drops, each for a reason.

docs/openapi.yaml states every rule the server enforces that JSON Schema can state. A few
rules it cannot state, so it gives them in descriptions; Schemathesis, which reads only the
schemas, then calls a correct answer a failure. `filter_failure` drops exactly those, and only
after checking, from the request itself, that the server applied the rule the spec describes.
Anything else (including every failure that needs a server change) still fails the run. The
run's summary counts what was dropped ("N dropped by filter_failure").

Schema-valid request rejected (ST202), dropped when the request was not schema-valid after all
(a stateful link that filled a path parameter from a null in a response sends `None`, e.g.
GET /v1/plans/None for a key whose `plan_id` is null), or when the 422 names the rule and the
request breaks it:
  - `expires_at` not in the future (the schema can say date-time, not "after now");
  - a `plan_id` that no plan has (referential: depends on the stored state);
  - PUT /v1/plans/{plan_id} with a body `id` other than the path's (a rule across two
    parameters);
  - a listing `cursor` this API did not issue (opaque tokens);
  - an `Idempotency-Key` already used with another body (depends on earlier requests);
  - `scopes` or `metadata` over 512 bytes in all (a sum across entries).

Schema-violating request accepted (ST201), dropped when the only violation is a `maxLength`
that the spec states as the character bound of a byte limit (`x-utf8-max-bytes`: the limit
divided by 4, the most bytes a character takes) and the request is within the byte limit: the
server counts bytes, so e.g. a 30-character ASCII key name (30 bytes) is rightly accepted.

And three generation fixes (`map_case`), for schema-valid cases only: a PUT /v1/plans/{plan_id}
body's `id` is set to the path's, a POST /v1/keys `Idempotency-Key` is derived from the body,
and GET /v1/keys and /v1/me/keys are sent without a made-up `cursor` (as are the POSTs' keys),
so what these operations do is tested
rather than refused for those rules.

Each drop is appended to $TOLLGATE_SCHEMATHESIS_DROPPED when set; the script prints the tally
(and with TOLLGATE_SCHEMATHESIS_DEBUG=1 writes each dropped request to that file + `.debug`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import urllib.parse
from typing import Any

import jsonschema_rs
import schemathesis
import yaml
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.openapi.checks import RejectedPositiveData

SPEC_PATH = pathlib.Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
# Both sides of the scopes and metadata totals (shared/src/domain/key_records.rs).
MAX_SCOPES_BYTES = 512
MAX_METADATA_BYTES = 512
# The key listings whose `cursor` only this API can issue.
LISTINGS = ("/v1/keys", "/v1/me/keys")


def _relax(node: Any, formats: dict[str, Any]) -> Any:
    """The spec with each `maxLength` that stands for a byte limit replaced by that limit."""
    if isinstance(node, list):
        return [_relax(v, formats) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _relax(v, formats) for k, v in node.items()}
    limit = node.get("x-utf8-max-bytes")
    if isinstance(limit, int):
        out.pop("maxLength", None)
        name = f"utf8-max-bytes-{limit}"
        out["format"] = name
        formats[name] = lambda s, limit=limit: len(s.encode("utf-8")) <= limit
    return out


FORMATS: dict[str, Any] = {}
RELAXED_COMPONENTS = _relax(SPEC["components"], FORMATS)


def _body_schema(case: Any) -> Any:
    op = SPEC["paths"].get(case.operation.path, {}).get(case.operation.method.lower(), {})
    return op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")


def _valid(schema: Any, components: Any, instance: Any) -> bool:
    validator = jsonschema_rs.Draft202012Validator(
        {"allOf": [schema], "components": components}, formats=FORMATS, validate_formats=True
    )
    return validator.is_valid(instance)


def _only_byte_bounds_broken(case: Any) -> bool:
    schema = _body_schema(case)
    body = case.body
    if schema is None:
        return False
    try:
        json.dumps(body)
    except (TypeError, ValueError):
        return False
    strict_ok = _valid(schema, SPEC["components"], body)
    relaxed_ok = _valid(_relax(schema, FORMATS), RELAXED_COMPONENTS, body)
    return not strict_ok and relaxed_ok


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _parameters_schema_valid(case: Any) -> bool:
    """Whether every path parameter the case sends is valid for the spec (Schemathesis keeps
    path parameters percent-encoded, as sent: judged decoded, as the spec states them)."""
    item = SPEC["paths"].get(case.operation.path, {})
    op = item.get(case.operation.method.lower(), {})
    for param in map(_resolve, item.get("parameters", []) + op.get("parameters", [])):
        if param.get("in") != "path":
            continue
        value = (case.path_parameters or {}).get(param["name"])
        if isinstance(value, str):
            value = urllib.parse.unquote(value)
        if not _valid(param["schema"], SPEC["components"], value):
            return False
    return True


def _error_field(response: Any) -> tuple[str | None, str]:
    try:
        error = response.json()["error"]
        return error.get("field"), error.get("message", "")
    except Exception:  # noqa: BLE001 - not our error shape: keep the failure
        return None, ""


def _in_past(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        t = datetime.datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    if t.tzinfo is None:
        return False
    return t <= datetime.datetime.now(datetime.timezone.utc)


def _utf8_len(s: Any) -> int:
    return len(s.encode("utf-8")) if isinstance(s, str) else 0


def _documented_rejection(case: Any, response: Any) -> str | None:
    """The documented rule a 422 applied, if the request breaks it; else None."""
    if response.status_code != 422:
        return None
    if not _parameters_schema_valid(case):
        # Not a schema-valid request at all: a stateful link filled a path parameter from a
        # null in a response (Schemathesis sends it as `None`, e.g. GET /v1/plans/None).
        return "request not schema-valid (path parameter from a null in a response)"
    field, message = _error_field(response)
    body = case.body if isinstance(case.body, dict) else {}
    query = case.query or {}
    path = case.operation.path
    rules = [
        ("expires_at not in the future",
         field == "expires_at" and "in the future" in message and _in_past(body.get("expires_at"))),
        ("plan_id names no plan",
         field == "plan_id" and "no plan with this id exists" in message and isinstance(body.get("plan_id"), str)),
        ("PUT body id is not the path's plan_id",
         field == "id" and path == "/v1/plans/{plan_id}" and "must match the plan id" in message
         and isinstance(body.get("id"), str) and body.get("id") != (case.path_parameters or {}).get("plan_id")),
        ("cursor not issued by this API", field == "cursor" and path in LISTINGS and "cursor" in query),
        ("Idempotency-Key reused with another body",
         field == "Idempotency-Key" and "different request body" in message),
        ("scopes over 512 bytes in all",
         field == "scopes" and "in all" in message
         and sum(_utf8_len(s) for s in body.get("scopes") or []) > MAX_SCOPES_BYTES),
        ("metadata over 512 bytes in all",
         field == "metadata" and "in all" in message and isinstance(body.get("metadata"), dict)
         and sum(_utf8_len(k) + _utf8_len(v) for k, v in body["metadata"].items()) > MAX_METADATA_BYTES),
    ]
    return next((reason for reason, applies in rules if applies), None)


def _record(reason: str, case: Any) -> None:
    """Appends what was dropped to $TOLLGATE_SCHEMATHESIS_DROPPED (the script sums it up)."""
    path = os.environ.get("TOLLGATE_SCHEMATHESIS_DROPPED")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{case.operation.method.upper()} {case.operation.path}\t{reason}\n")
        if os.environ.get("TOLLGATE_SCHEMATHESIS_DEBUG"):
            with open(path + ".debug", "a", encoding="utf-8") as f:
                f.write(f"{reason}\t{case.path_parameters!r}\t{case.query!r}\t{case.body!r}\n")


@schemathesis.hook
def map_case(context, case):  # noqa: ANN001
    """Schema-valid cases made to meet the two rules that span parameters. Negative cases are
    left alone. Without this nearly every such case would be rightly refused, and what the
    operation does would go untested.

    - PUT /v1/plans/{plan_id}: a body `id`, when a string, is the path's.
    - POST /v1/keys and /v1/me/keys: an `Idempotency-Key`, when sent, is derived from the body,
      so one key is never reused with another body (the same body again is a replay, 200).
    - GET /v1/keys and /v1/me/keys: no generated `cursor` (only one this API issued is valid,
      and a generator cannot make one; the stateful phase passes real ones from `next_cursor`).
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    method, path = case.operation.method.lower(), case.operation.path
    if (
        (method, path) == ("put", "/v1/plans/{plan_id}")
        and isinstance(case.body, dict)
        and isinstance(case.body.get("id"), str)
        and isinstance((case.path_parameters or {}).get("plan_id"), str)
    ):
        case.body["id"] = case.path_parameters["plan_id"]
    if method == "get" and path in LISTINGS and isinstance(case.query, dict):
        case.query.pop("cursor", None)
    if (method, path) in (("post", "/v1/keys"), ("post", "/v1/me/keys")) and case.headers:
        name = next((h for h in case.headers if h.lower() == "idempotency-key"), None)
        if name is not None and isinstance(case.body, dict):
            digest = hashlib.sha256(json.dumps(case.body, sort_keys=True).encode("utf-8")).hexdigest()
            case.headers[name] = f"st-{digest}"
    return case

@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:  # noqa: ANN001
    """Keep a failure unless it is one of the documented cases above."""
    if response is None:
        return True
    reason = None
    if isinstance(failure, RejectedPositiveData):
        reason = _documented_rejection(case, response)
    elif isinstance(failure, AcceptedNegativeData):
        if 200 <= response.status_code < 300 and _only_byte_bounds_broken(case):
            reason = "only a character bound of a byte limit broken, within the byte limit"
    if reason is None:
        return True
    _record(f"{failure.code} {reason}", case)
    return False
