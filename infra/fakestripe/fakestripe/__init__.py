"""A Stripe-compatible test-mode server, so Ticketing can take payments without Stripe.

It stands in for an outside party, so it shares no code with the services. Point the Stripe
SDK at it (`base_addresses={"api": "http://host:12111"}` or `STRIPE_API_BASE`) with any
`sk_test_...` key; state lives in memory for the process lifetime.

Covered, form-encoded in and JSON out with Stripe's shapes, headers (`Request-Id`,
`Stripe-Version`) and error bodies:

- `POST /v1/payment_intents`: amount, currency, payment_method, confirm, description,
  `automatic_payment_methods[...]`, `metadata[...]`. With `confirm=true` the test card decides:
  `pm_card_visa`, `tok_visa`, `pm_card_mastercard`, `tok_mastercard` succeed;
  `pm_card_chargeDeclined`, `tok_chargeDeclined` (generic_decline) and
  `pm_card_chargeDeclinedInsufficientFunds` (insufficient_funds) answer 402 card_error
  with the PaymentIntent, now `requires_payment_method`. Any other payment method is a 400
  resource_missing; amounts below Stripe's minimum (50 cents in usd) a 400 amount_too_small.
- `GET /v1/payment_intents/{id}`: retrieve (404 resource_missing when unknown).
- `POST /v1/refunds`: `payment_intent`, optional `amount`; the rest of the charge by default.
- Idempotency-Key on POSTs, scoped per API key as Stripe does: the same key and parameters
  replay the first outcome (`Idempotent-Replayed: true`), declines included; different
  parameters are a 400 idempotency_error. Concurrent requests with one key run once.
- `GET /_test/payment_intents` (test-only, no auth): `{"object": "list", "data": [...]}`,
  every PaymentIntent created so far, oldest first, so tests can count charges.
- `GET /healthz`: liveness for containers.

Run it with `python -m fakestripe` (`HOST`, default 0.0.0.0; `PORT`, default 12111).
"""

from fakestripe.app import CARDS, State, create_app

__all__ = ["CARDS", "State", "create_app"]
