"""Stripe's own Python library against fake-stripe: what `resolve
--from-stripe` relies on, read through the official client.

Usage: python3 scripts/stripe_client_check.py http://127.0.0.1:12111
(`pip install stripe` first). Exits non-zero on the first surprise.
"""

import sys
import time

import stripe

stripe.api_key = "sk_test_fake"
stripe.api_base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:12111"
stripe.max_network_retries = 0

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

print("ok: the official client read every answer")
