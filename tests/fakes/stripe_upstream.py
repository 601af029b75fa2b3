"""Fake Stripe: the REST subset Switchyard calls, form-encoded like Stripe, plus signed webhook delivery.

Speaks `POST/GET /v1/customers`, `/v1/checkout/sessions`, `/v1/payment_intents` (off-session confirm
with scripted card outcomes), `/v1/refunds`, with Stripe's error JSON and `Idempotency-Key` replay.
The `stripe` library is pointed at it with `StripeClient(base_addresses={"api": fake.base_url})`
(Switchyard: `STRIPE_API_BASE`). Tests play the customer (`checkout_pay`), the bank (`card_outcome`)
and the dashboard (`refund`, `dispute`), then deliver the resulting events with `deliver`, signed
exactly as Stripe signs them: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

A session's `url` is a small hosted checkout page (`GET /pay/<id>`, no API key: it is for a browser).
Its "Pay" button (`POST /pay/<id>`) does `checkout_pay`, delivers the events, signed, to `webhook_url`
(set it and `webhook_secret` first, as one registers an endpoint in Stripe's dashboard) and redirects
to the session's `success_url`; "Cancel" goes to `cancel_url`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl

import httpx
from aiohttp import web

from tests.fakes.base import ThreadedServer, serve_forever

API_VERSION = "2025-01-27.acacia"
PARAMS = web.RequestKey("stripe_params", dict)


def new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


def parse_form(body: str) -> dict[str, Any]:
    """Decode Stripe's bracketed form encoding (`a[b][0][c]=v`) into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = key.replace("]", "").split("[")
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt_is_index = not last and parts[i + 1].isdigit()
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append(None)
                if last:
                    node[idx] = value
                else:
                    if node[idx] is None:
                        node[idx] = [] if nxt_is_index else {}
                    node = node[idx]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if nxt_is_index else {})
    return root


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header value Stripe would send for `payload`."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def _error(status: int, message: str, *, type_: str = "invalid_request_error", **extra: Any) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message, **extra}}, status=status)


def _dollars(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


HOSTED_PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width, initial-scale=1">
<title>Checkout (test mode)</title>
<style>
body{{margin:0;font:16px/1.5 system-ui,sans-serif;background:#f6f9fc;color:#1a1f36}}
main{{max-width:420px;margin:48px auto;padding:0 16px}}
.card{{background:#fff;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08);padding:28px}}
.test{{display:inline-block;background:#ffde92;color:#7a4b00;font-size:12px;font-weight:600;
border-radius:4px;padding:2px 8px;margin-bottom:12px}}
h1{{font-size:20px;margin:0 0 4px}} .total{{font-size:34px;font-weight:700;margin:0 0 20px}}
table{{width:100%;border-collapse:collapse;margin-bottom:20px;font-size:14px}}
td{{padding:8px 0;border-bottom:1px solid #e6ebf1}} .num{{text-align:right}}
label{{display:block;font-size:14px;margin-bottom:4px}}
input{{width:100%;box-sizing:border-box;padding:10px;border:1px solid #cfd7df;border-radius:6px;
font:inherit;margin-bottom:16px;background:#f6f9fc}}
button{{width:100%;padding:12px;border:0;border-radius:6px;background:#635bff;color:#fff;
font:600 16px system-ui,sans-serif;cursor:pointer}}
.cancel{{display:block;text-align:center;margin-top:16px;font-size:14px;color:#635bff}}
</style></head>
<body><main><div class=card>
<span class=test>TEST MODE</span>
<h1>Pay Switchyard</h1>
<p class=total data-testid=checkout-total>{total}</p>
<table>{rows}</table>
<form method=post action="{action}">
<label for=card>Card number</label>
<input id=card value="4242 4242 4242 4242" readonly>
<button type=submit>Pay {total}</button>
</form>
{cancel}
</div></main></body></html>
"""


class FakeStripe(ThreadedServer):
    """A threaded aiohttp server holding Stripe objects in memory; inspect `.requests` and the stores."""

    def __init__(self, *, api_key: str = "sk_test_switchyard", port: int = 0) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.lock = threading.Lock()
        self.customers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.calls: Counter[str] = Counter()
        # payment method id -> "ok" | a card error code ("card_declined", "authentication_required", ...)
        self.card_outcomes: dict[str, str] = {}
        self.latency = 0.0
        # where the hosted checkout page delivers its events (a registered webhook endpoint)
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.deliveries: list[tuple[str, int]] = []  # (event type, HTTP status) from the hosted page
        self._idempotency: dict[str, tuple[str, int, bytes]] = {}

    # ---- the HTTP API ------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_and_idempotency])
        app.router.add_post("/v1/customers", self._customer_create)
        app.router.add_get("/v1/customers/{id}", self._get(self.customers, "customer"))
        app.router.add_post("/v1/checkout/sessions", self._session_create)
        app.router.add_get("/v1/checkout/sessions/{id}", self._get(self.sessions, "checkout.session"))
        app.router.add_post("/v1/payment_intents", self._intent_create)
        app.router.add_get("/v1/payment_intents/{id}", self._get(self.payment_intents, "payment_intent"))
        app.router.add_post("/v1/refunds", self._refund_create)
        app.router.add_get("/v1/charges/{id}", self._get(self.charges, "charge"))
        app.router.add_get("/pay/{id}", self._hosted_page)
        app.router.add_post("/pay/{id}", self._hosted_pay)
        return app

    @web.middleware
    async def _auth_and_idempotency(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/pay/"):  # the hosted page: a browser, not an API client
            return await handler(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            return _error(401, "Invalid API Key provided: " + auth[7:15] + "…")
        body = await request.text()
        params = parse_form(body) if body else dict(request.query)
        with self.lock:
            self.requests.append((request.method, request.path, params))
            self.calls[f"{request.method} {request.path}"] += 1
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            request[PARAMS] = params
            return await handler(request)
        fingerprint = f"{request.path}?{body}"
        with self.lock:
            seen = self._idempotency.get(key)
        if seen is not None:
            if seen[0] != fingerprint:
                return _error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                    type_="idempotency_error",
                )
            return web.Response(
                body=seen[2],
                status=seen[1],
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        request[PARAMS] = params
        response = await handler(request)
        if isinstance(response, web.Response) and response.status < 500 and response.body is not None:
            with self.lock:
                self._idempotency.setdefault(key, (fingerprint, response.status, bytes(response.body)))  # type: ignore[arg-type]
        return response

    def _get(self, store: dict[str, dict[str, Any]], name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = store.get(request.match_info["id"])
            if obj is None:
                return _error(
                    404, f"No such {name}: '{request.match_info['id']}'", code="resource_missing", param="id"
                )
            return web.json_response(obj)

        return handler

    async def _customer_create(self, request: web.Request) -> web.Response:
        p = request[PARAMS]
        customer = {
            "id": new_id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "name": p.get("name"),
            "email": p.get("email"),
            "metadata": p.get("metadata") or {},
            "livemode": False,
        }
        with self.lock:
            self.customers[customer["id"]] = customer
        return web.json_response(customer)

    async def _session_create(self, request: web.Request) -> web.Response:
        p = request[PARAMS]
        for required in ("mode", "success_url", "line_items"):
            if not p.get(required):
                return _error(
                    400, f"Missing required param: {required}.", code="parameter_missing", param=required
                )
        if p["mode"] != "payment":
            return _error(400, "This fake only does mode=payment.", param="mode")
        if p.get("customer") and p["customer"] not in self.customers:
            return _error(
                400, f"No such customer: '{p['customer']}'", code="resource_missing", param="customer"
            )
        total = 0
        for i, item in enumerate(p["line_items"]):
            try:
                total += int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1))
            except (KeyError, TypeError, ValueError):
                return _error(400, "Invalid line item.", param=f"line_items[{i}]")
        if total < 50:
            return _error(
                400, "Amount must be at least $0.50 usd", code="amount_too_small", param="line_items"
            )
        sid = new_id("cs")
        session = {
            "id": sid,
            "object": "checkout.session",
            "created": int(time.time()),
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": total,
            "amount_subtotal": total,
            "currency": p["line_items"][0]["price_data"].get("currency", "usd"),
            "customer": p.get("customer"),
            "client_reference_id": p.get("client_reference_id"),
            "metadata": p.get("metadata") or {},
            "payment_intent": None,
            "success_url": p["success_url"],
            "cancel_url": p.get("cancel_url"),
            "url": f"{self.base_url}/pay/{sid}",
            "livemode": False,
            "_payment_intent_data": p.get("payment_intent_data") or {},
            "_line_items": p["line_items"],
        }
        with self.lock:
            self.sessions[sid] = session
        return web.json_response(self._public(session))

    async def _intent_create(self, request: web.Request) -> web.Response:
        p = request[PARAMS]
        try:
            amount = int(p["amount"])
        except (KeyError, ValueError):
            return _error(400, "Missing required param: amount.", code="parameter_missing", param="amount")
        if p.get("customer") and p["customer"] not in self.customers:
            return _error(
                400, f"No such customer: '{p['customer']}'", code="resource_missing", param="customer"
            )
        intent = self._new_intent(
            amount=amount,
            currency=p.get("currency", "usd"),
            customer=p.get("customer"),
            payment_method=p.get("payment_method"),
            metadata=p.get("metadata") or {},
            setup_future_usage=p.get("setup_future_usage"),
        )
        if p.get("confirm") != "true":
            intent["status"] = "requires_confirmation"
            return web.json_response(intent)
        outcome = self.card_outcomes.get(intent["payment_method"] or "", "ok")
        if outcome == "ok":
            self._succeed(intent)
            return web.json_response(intent)
        message = {
            "card_declined": "Your card was declined.",
            "authentication_required": "Your card was declined. This transaction requires authentication.",
            "expired_card": "Your card has expired.",
        }.get(outcome, "Your card was declined.")
        error = {"type": "card_error", "code": outcome, "message": message, "decline_code": outcome}
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = error
        return _error(
            402, message, type_="card_error", code=outcome, decline_code=outcome, payment_intent=intent
        )

    async def _refund_create(self, request: web.Request) -> web.Response:
        p = request[PARAMS]
        charge_id = p.get("charge")
        if not charge_id and p.get("payment_intent") in self.payment_intents:
            charge_id = self.payment_intents[p["payment_intent"]]["latest_charge"]
        charge = self.charges.get(charge_id or "")
        if charge is None:
            return _error(400, "No such charge.", code="resource_missing", param="charge")
        amount = int(p.get("amount") or charge["amount"] - charge["amount_refunded"])
        if amount <= 0 or charge["amount_refunded"] + amount > charge["amount"]:
            return _error(
                400,
                f"Refund amount (${amount / 100:.2f}) is greater than unrefunded amount on charge.",
                code="charge_already_refunded" if amount > 0 else "parameter_invalid_integer",
                param="amount",
            )
        refund = self._apply_refund(charge, amount)
        return web.json_response(refund)

    # ---- the hosted checkout page -------------------------------------------------------------------

    async def _hosted_page(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return web.Response(status=404, text="This checkout session does not exist.")
        if session["status"] != "open":
            return web.Response(status=410, text=f"This checkout session is {session['status']}.")
        rows = "".join(
            f"<tr><td>{html.escape(str(item['price_data'].get('product_data', {}).get('name', 'Item')))}</td>"
            f"<td class=num>{_dollars(int(item['price_data']['unit_amount']) * int(item.get('quantity', 1)))}</td></tr>"
            for item in session["_line_items"]
        )
        cancel = session.get("cancel_url")
        cancel_link = f'<a class=cancel href="{html.escape(cancel)}">Cancel and go back</a>' if cancel else ""
        page = HOSTED_PAGE.format(
            total=_dollars(session["amount_total"]),
            rows=rows,
            action=html.escape(f"/pay/{session['id']}"),
            cancel=cancel_link,
        )
        return web.Response(text=page, content_type="text/html")

    async def _hosted_pay(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["id"]
        session = self.sessions.get(sid)
        if session is None or session["status"] != "open":
            return web.Response(status=410, text="This checkout session is no longer open.")
        events = self.checkout_pay(sid)
        if self.webhook_url and self.webhook_secret:
            for event in events:
                # In a thread: the app may call this fake's API while it handles the webhook.
                response = await asyncio.to_thread(
                    self.deliver, self.webhook_url, event, secret=self.webhook_secret
                )
                with self.lock:
                    self.deliveries.append((event["type"], response.status_code))
        raise web.HTTPSeeOther(session["success_url"])

    # ---- object helpers ------------------------------------------------------------------------------

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def _new_intent(self, **fields: Any) -> dict[str, Any]:
        intent = {
            "id": new_id("pi"),
            "object": "payment_intent",
            "created": int(time.time()),
            "status": "requires_payment_method",
            "latest_charge": None,
            "last_payment_error": None,
            "livemode": False,
            **fields,
        }
        with self.lock:
            self.payment_intents[intent["id"]] = intent
        return intent

    def _succeed(self, intent: dict[str, Any]) -> dict[str, Any]:
        charge = {
            "id": new_id("ch"),
            "object": "charge",
            "created": int(time.time()),
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "refunded": False,
            "currency": intent["currency"],
            "customer": intent.get("customer"),
            "payment_intent": intent["id"],
            "payment_method": intent.get("payment_method"),
            "paid": True,
            "status": "succeeded",
            "disputed": False,
            "metadata": intent.get("metadata") or {},
            "livemode": False,
        }
        with self.lock:
            self.charges[charge["id"]] = charge
            intent["status"] = "succeeded"
            intent["latest_charge"] = charge["id"]
            intent["amount_received"] = intent["amount"]
        return charge

    def _apply_refund(self, charge: dict[str, Any], amount: int) -> dict[str, Any]:
        refund = {
            "id": new_id("re"),
            "object": "refund",
            "created": int(time.time()),
            "amount": amount,
            "charge": charge["id"],
            "payment_intent": charge["payment_intent"],
            "currency": charge["currency"],
            "status": "succeeded",
        }
        with self.lock:
            self.refunds[refund["id"]] = refund
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        return refund

    # ---- what a test does as the customer, the bank or the Stripe dashboard ------------------------

    def event(self, type_: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
        """A Stripe event object (as delivered to webhooks) wrapping a snapshot of `obj`."""
        return {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()) if created is None else created,
            "type": type_,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": json.loads(json.dumps(self._public(obj)))},
        }

    def checkout_pay(
        self, session_id: str, *, payment_method: str = "pm_card_visa", delayed: bool = False
    ) -> list[dict[str, Any]]:
        """The customer pays on the hosted page. Returns the events Stripe would send, in order.

        `delayed` is a bank debit: the session completes unpaid and `async_payment_succeeded` (or
        `_failed`, see `settle_delayed`) follows later.
        """
        session = self.sessions[session_id]
        pid = session["_payment_intent_data"]
        intent = self._new_intent(
            amount=session["amount_total"],
            currency=session["currency"],
            customer=session["customer"],
            payment_method=payment_method,
            metadata=pid.get("metadata") or {},
            setup_future_usage=pid.get("setup_future_usage"),
        )
        with self.lock:
            session["status"] = "complete"
            session["payment_intent"] = intent["id"]
        if delayed:
            intent["status"] = "processing"
            return [self.event("checkout.session.completed", session)]
        self._succeed(intent)
        session["payment_status"] = "paid"
        return [
            self.event("checkout.session.completed", session),
            self.event("payment_intent.succeeded", intent),
        ]

    def settle_delayed(self, session_id: str, *, succeeded: bool) -> dict[str, Any]:
        session = self.sessions[session_id]
        intent = self.payment_intents[session["payment_intent"]]
        if succeeded:
            self._succeed(intent)
            session["payment_status"] = "paid"
            return self.event("checkout.session.async_payment_succeeded", session)
        intent["status"] = "requires_payment_method"
        return self.event("checkout.session.async_payment_failed", session)

    def expire(self, session_id: str) -> dict[str, Any]:
        session = self.sessions[session_id]
        session["status"] = "expired"
        return self.event("checkout.session.expired", session)

    def refund(self, charge_id: str, amount: int | None = None) -> dict[str, Any]:
        """Refund from the dashboard; returns the `charge.refunded` event (cumulative amount_refunded)."""
        charge = self.charges[charge_id]
        self._apply_refund(
            charge, amount if amount is not None else charge["amount"] - charge["amount_refunded"]
        )
        return self.event("charge.refunded", charge)

    def dispute(self, charge_id: str, *, reason: str = "fraudulent") -> dict[str, Any]:
        charge = self.charges[charge_id]
        charge["disputed"] = True
        dispute = {
            "id": new_id("dp"),
            "object": "dispute",
            "created": int(time.time()),
            "amount": charge["amount"],
            "charge": charge_id,
            "payment_intent": charge["payment_intent"],
            "currency": charge["currency"],
            "reason": reason,
            "status": "needs_response",
        }
        with self.lock:
            self.disputes[dispute["id"]] = dispute
        return self.event("charge.dispute.created", dispute)

    def dispute_close(self, dispute_id: str, *, won: bool) -> dict[str, Any]:
        """The bank decides: `charge.dispute.closed` with status `won` (funds back) or `lost`."""
        dispute = self.disputes[dispute_id]
        dispute["status"] = "won" if won else "lost"
        return self.event("charge.dispute.closed", dispute)

    def discount(self, session_id: str, *, amount_off: int) -> None:
        """A promotion code applied on the hosted page: the customer pays `amount_off` cents less."""
        session = self.sessions[session_id]
        with self.lock:
            session["total_details"] = {"amount_discount": amount_off, "amount_tax": 0, "amount_shipping": 0}
            session["amount_total"] = session["amount_subtotal"] - amount_off

    def charge_for_session(self, session_id: str) -> dict[str, Any]:
        return self.charges[
            self.payment_intents[self.sessions[session_id]["payment_intent"]]["latest_charge"]
        ]

    def intents_created(self) -> list[dict[str, Any]]:
        """PaymentIntents created through the API (auto top-ups), not by the hosted checkout page."""
        return [p for m, path, p in self.requests if m == "POST" and path == "/v1/payment_intents"]

    @staticmethod
    def deliver(
        url: str,
        event: dict[str, Any],
        *,
        secret: str,
        timestamp: int | None = None,
        signature: str | None = None,
        timeout: float = 30.0,
    ) -> httpx.Response:
        """POST `event` to a webhook endpoint, signed as Stripe signs it (or with `signature` as given)."""
        payload = json.dumps(event, indent=2).encode()  # Stripe sends pretty-printed JSON
        header = signature if signature is not None else sign(payload, secret, timestamp)
        return httpx.post(
            url,
            content=payload,
            headers={"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header},
            timeout=timeout,
        )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="sk_test_switchyard")
    args = parser.parse_args()
    serve_forever(FakeStripe(api_key=args.api_key, port=args.port))
