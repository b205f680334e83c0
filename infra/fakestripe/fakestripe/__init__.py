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
- Webhooks, as Stripe sends them: `payment_intent.succeeded`, `payment_intent.payment_failed`
  (a declined confirm) and `charge.refunded` (data.object is the Charge: id, payment_intent,
  amount, amount_refunded, refunded, the intent's metadata), each an Event object posted to
  `WEBHOOK_URL` after the API answer with `Stripe-Signature: t=...,v1=...` (HMAC-SHA256 with
  `STRIPE_WEBHOOK_SECRET`), retried with back-off on a non-2xx answer or a connection error,
  `WEBHOOK_MAX_ATTEMPTS` times in all (5), waiting `WEBHOOK_RETRY_SECONDS` (1.0) then double.
  No `WEBHOOK_URL`: events are kept, not sent.
- `GET /healthz`: liveness for containers.

Test-only routes (`/_test`, no auth), for tests to look and to arrange races:

- `GET /_test/payment_intents`, `GET /_test/refunds`, `GET /_test/events[?type=...]`:
  `{"object": "list", "data": [...]}`, oldest first, full Stripe objects.
- `GET /_test/webhooks`: endpoint, secret, retry settings, `pending` (deliveries still under
  way) and `deliveries` (every attempt: event, type, attempt, status, error, delivered).
  `POST /_test/webhooks` `{"url", "secret", "max_attempts", "retry_seconds"}` changes them.
- `POST /_test/webhooks/redeliver` (`{"id": "evt_..."}` or no body for every event): one more
  delivery each, answered once the endpoint has answered, as Stripe delivering twice.
- `POST /_test/webhooks/sign` `{"id", "timestamp"?, "secret"?}`: `{"payload", "signature"}`,
  the exact body and header, for a test to post to an app it serves in-process.
- `POST /_test/faults` (see `fakestripe.faults.Rule`): `{"match": "POST /v1/payment_intents",
  "count": 1}` plus `"delay_seconds": 2.0`, `"fail": 500`, `"fail_after_processing": true` or
  `"hold": true` (with `"after_processing": true`, the answer rather than the request).
  `GET /_test/faults` shows the rules and `held` requests; `POST /_test/faults/release`
  (`{"count": n}` for the oldest n) lets held requests go on; `DELETE /_test/faults` clears all.

Run it with `python -m fakestripe` (`HOST`, default 0.0.0.0; `PORT`, default 12111). Tests start
it as a process with `ticketing_common.embedded.start_stripe`, like the other servers.
"""

from fakestripe.app import CARDS, State, create_app
from fakestripe.webhooks import Config

__all__ = ["CARDS", "Config", "State", "create_app"]
