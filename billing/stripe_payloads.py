"""Shape checks of a verified Stripe webhook body, before anything is recorded or applied.

A valid signature proves who sent a body, not that it is an event we understand: `[]`, an event
without `type`, or a field of the wrong type must be a 400 at the door, not a 500 there or a task
that fails forever later. Only the fields the handlers in `billing.services` read are checked.
"""

from __future__ import annotations

from typing import Any

import orjson

from switchyard.errors import SwitchyardError

MAX_ID_CHARS = 255
MAX_CENTS = 10**12  # ten billion dollars: above any real charge, far below the ledger's 64-bit range


class WebhookRejected(SwitchyardError):
    status, code = 400, "webhook_rejected"


def _reject(path: str, what: str) -> WebhookRejected:
    return WebhookRejected(f"Not a Stripe event we can read: {path} {what}.", metadata={"field": path})


def _string(obj: dict[str, Any], key: str, path: str, *, required: bool = False) -> None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _reject(f"{path}.{key}", "is missing")
        return
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise _reject(f"{path}.{key}", f"must be a non-empty string of at most {MAX_ID_CHARS} characters")


def _ref(obj: dict[str, Any], key: str, path: str) -> None:
    """An id, or the expanded object carrying it."""
    value = obj.get(key)
    if isinstance(value, dict):
        _string(value, "id", f"{path}.{key}", required=True)
    else:
        _string(obj, key, path)


def _cents(obj: dict[str, Any], key: str, path: str) -> None:
    value = obj.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CENTS:
        raise _reject(f"{path}.{key}", f"must be a whole number of cents between 0 and {MAX_CENTS}")


def _metadata(obj: dict[str, Any], path: str) -> None:
    meta = obj.get("metadata")
    if meta is None:
        return
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _reject(f"{path}.metadata", "must be an object of strings")
    for key in ("switchyard_purchase", "switchyard_org"):
        value = meta.get(key)
        if value is not None and not (value.isascii() and value.isdigit() and len(value) <= 18):
            raise _reject(f"{path}.metadata.{key}", "must be a number")


def _session(obj: dict[str, Any], path: str) -> None:
    for key in ("amount_total", "amount_subtotal"):
        _cents(obj, key, path)
    _string(obj, "payment_status", path)
    _ref(obj, "payment_intent", path)
    _metadata(obj, path)


def _charge(obj: dict[str, Any], path: str) -> None:
    for key in ("amount", "amount_refunded"):
        _cents(obj, key, path)
    _ref(obj, "payment_intent", path)


def _dispute(obj: dict[str, Any], path: str) -> None:
    _cents(obj, "amount", path)
    _ref(obj, "charge", path)
    _ref(obj, "payment_intent", path)
    _string(obj, "status", path)
    _string(obj, "reason", path)


def _intent(obj: dict[str, Any], path: str) -> None:
    _metadata(obj, path)
    error = obj.get("last_payment_error")
    if error is not None and not isinstance(error, dict):
        raise _reject(f"{path}.last_payment_error", "must be an object")


OBJECT_CHECKS = {
    "checkout.session.completed": _session,
    "checkout.session.async_payment_succeeded": _session,
    "checkout.session.async_payment_failed": _session,
    "checkout.session.expired": _session,
    "charge.refunded": _charge,
    "charge.dispute.created": _dispute,
    "charge.dispute.closed": _dispute,
    "payment_intent.succeeded": _intent,
    "payment_intent.payment_failed": _intent,
}


def webhook_event_parse(payload: bytes) -> dict[str, Any]:
    """The event a (verified) body holds, checked for what we read of it; raises WebhookRejected."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise WebhookRejected("Not a Stripe event: the body is not JSON.")
    if not isinstance(event, dict):
        raise _reject("the body", "must be a JSON object")
    _string(event, "id", "event", required=True)
    _string(event, "type", "event", required=True)
    created = event.get("created")
    if created is not None and (
        isinstance(created, bool) or not isinstance(created, int) or not 0 <= created <= 2**40
    ):
        raise _reject("event.created", "must be a unix timestamp")
    check = OBJECT_CHECKS.get(event["type"])
    if check is not None:
        data = event.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
            raise _reject("event.data.object", "must be an object")
        obj = data["object"]
        _string(obj, "id", "data.object", required=True)
        check(obj, "data.object")
    return event
