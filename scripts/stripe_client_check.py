"""Stripe's own Python library against fake-stripe: what `resolve
--from-stripe` relies on, read through the official client.

Usage: python3 scripts/stripe_client_check.py http://127.0.0.1:12111 [PORT SECRET]
(`pip install stripe` first). With PORT and SECRET, it also takes the
events fake-stripe delivers to http://127.0.0.1:PORT/ (fake-stripe started
with `--webhook-url` there and `--webhook-secret SECRET`) and verifies
each with `stripe.Webhook.construct_event`. Exits non-zero on the first
surprise.
"""

import http.server
import sys
import threading
import time

import stripe

stripe.api_key = "sk_test_fake"
stripe.api_base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:12111"
stripe.max_network_retries = 0

deliveries = []
if len(sys.argv) > 3:
    webhook_port, webhook_secret = int(sys.argv[2]), sys.argv[3]

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            deliveries.append((body, self.headers.get("Stripe-Signature")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", webhook_port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()

customer = stripe.Customer.create(email="py@example.com", source="tok_visa")
print("customer created:", customer.id)
again = stripe.Customer.retrieve(customer.id)
assert again.id == customer.id and again.email == "py@example.com", again
print("customer retrieved:", again.id, again.email)

charge = stripe.Charge.create(
    amount=2000,
    currency="usd",
    customer=customer.id,
    metadata={"rocket_rides_downstream_key": "py-check-1"},
    idempotency_key="py-check-1",
)
print("charge created:", charge.id, charge.status)
replayed = stripe.Charge.create(
    amount=2000,
    currency="usd",
    customer=customer.id,
    metadata={"rocket_rides_downstream_key": "py-check-1"},
    idempotency_key="py-check-1",
)
assert replayed.id == charge.id, replayed
print("charge replayed:", replayed.id)

fetched = stripe.Charge.retrieve(charge.id)
assert fetched.id == charge.id and fetched.amount == 2000, fetched
assert fetched.metadata["rocket_rides_downstream_key"] == "py-check-1", fetched
print("charge retrieved:", fetched.id, fetched.amount, fetched.currency, fetched.status)

query = "metadata['rocket_rides_downstream_key']:'py-check-1'"
deadline = time.time() + 30
while True:
    found = stripe.Charge.search(query=query)
    if found.data or time.time() > deadline:
        break
    print("search: not indexed yet")
    time.sleep(0.5)
assert [c.id for c in found.data] == [charge.id], found
print("charge found by search:", found.data[0].id)

try:
    stripe.Charge.retrieve("ch_missing")
    raise AssertionError("an unknown charge was found")
except stripe.InvalidRequestError as error:
    assert error.http_status == 404 and error.code == "resource_missing", error
    print("unknown charge:", error.http_status, error.code, error.user_message)

try:
    stripe.Customer.retrieve("cus_missing")
    raise AssertionError("an unknown customer was found")
except stripe.InvalidRequestError as error:
    assert error.http_status == 404 and error.code == "resource_missing", error
    print("unknown customer:", error.http_status, error.code)

try:
    stripe.Charge.create(amount=2000, currency="usd", customer=customer.id, idempotency_key="py-check-1")
    raise AssertionError("a mismatched idempotent request went through")
except stripe.IdempotencyError as error:
    print("mismatched idempotent request:", error.http_status)

# PaymentIntents off session, as the charge phase makes them.
payer = stripe.Customer.create(
    email="py-pi@example.com",
    payment_method="pm_card_visa",
    invoice_settings={"default_payment_method": "pm_card_visa"},
)
method = payer.invoice_settings.default_payment_method
assert method and method.startswith("pm_"), payer
intent = stripe.PaymentIntent.create(
    amount=2000,
    currency="usd",
    customer=payer.id,
    payment_method=method,
    off_session=True,
    confirm=True,
    metadata={"rocket_rides_downstream_key": "py-pi-1"},
    idempotency_key="py-pi-1",
)
assert intent.status == "succeeded" and intent.latest_charge, intent
print("payment intent succeeded:", intent.id, intent.latest_charge)
assert stripe.PaymentIntent.retrieve(intent.id).status == "succeeded"
deadline = time.time() + 30
while True:
    found = stripe.PaymentIntent.search(query="metadata['rocket_rides_downstream_key']:'py-pi-1'")
    if found.data or time.time() > deadline:
        break
    time.sleep(0.5)
assert [i.id for i in found.data] == [intent.id], found
print("payment intent found by search:", found.data[0].id)

refund = stripe.Refund.create(
    payment_intent=intent.id,
    amount=500,
    metadata={"rocket_rides_downstream_key": "py-refund-1"},
    idempotency_key="py-refund-1",
)
assert refund.status == "succeeded" and refund.amount == 500, refund
print("refund created:", refund.id, refund.amount)
try:
    stripe.Refund.create(payment_intent=intent.id, amount=1501, idempotency_key="py-refund-2")
    raise AssertionError("refunded more than was left")
except stripe.InvalidRequestError as error:
    assert error.code == "amount_too_large", error
    print("refund beyond the charge refused:", error.code)
listed = stripe.Refund.list(payment_intent=intent.id)
assert [r.id for r in listed.data] == [refund.id], listed
assert stripe.Refund.retrieve(refund.id).metadata["rocket_rides_downstream_key"] == "py-refund-1"
print("refunds listed and retrieved:", refund.id)

needs_3ds = stripe.Customer.create(
    email="py-3ds@example.com",
    payment_method="pm_card_authenticationRequired",
    invoice_settings={"default_payment_method": "pm_card_authenticationRequired"},
)
try:
    stripe.PaymentIntent.create(
        amount=2000,
        currency="usd",
        customer=needs_3ds.id,
        payment_method=needs_3ds.invoice_settings.default_payment_method,
        off_session=True,
        confirm=True,
        idempotency_key="py-pi-3ds",
    )
    raise AssertionError("a card needing authentication was charged off session")
except stripe.CardError as error:
    assert error.code == "authentication_required", error
    waiting = error.error.payment_intent
    assert waiting["status"] == "requires_payment_method" and waiting["client_secret"], waiting
    print("authentication required:", waiting["id"])
    cancelled = stripe.PaymentIntent.cancel(waiting["id"])
    assert cancelled.status == "canceled", cancelled
    print("payment intent cancelled:", cancelled.id)

events = stripe.Event.list(limit=3)
assert events.data[0].type == "payment_intent.canceled", events
print("events listed:", [e.type for e in events.data])

if len(sys.argv) > 3:
    deadline = time.time() + 20
    while len(deliveries) < len(stripe.Event.list(limit=100).data) and time.time() < deadline:
        time.sleep(0.2)
    assert deliveries, "no event was delivered"
    types = []
    for body, signature in deliveries:
        event = stripe.Webhook.construct_event(body, signature, webhook_secret)
        types.append(event.type)
        try:
            stripe.Webhook.construct_event(body + b" ", signature, webhook_secret)
            raise AssertionError("a tampered body passed verification")
        except stripe.SignatureVerificationError:
            pass
    assert "payment_intent.succeeded" in types and "payment_intent.canceled" in types, types
    print("webhook events verified by construct_event:", len(deliveries), sorted(set(types)))

print("ok: the official client read every answer")
