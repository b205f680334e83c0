"""The decisions of payments (`domain`), pure: an order's document as read in, the update to
write (or None, or a refusal) out. No server: the same rules the API, the listeners, the
webhooks and the reconciler go through."""

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from ticketing_common.errors import BadRequestError, NotAuthorizedError, NotFoundError
from ticketing_common.moments import epoch_ms
from ticketing_payments.domain import (
    MAX_ATTEMPTS,
    Attempt,
    Order,
    Outcome,
    amount_in_cents,
    attempt_key,
    attempt_of_intent,
    attempt_slot,
    check_payable,
    fail_update,
    is_refund_overdue,
    is_stale,
    outcome_of,
    refund_due_update,
    refunded_update,
    settle_update,
    start_update,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOLD = timedelta(seconds=35)
USER = str(ObjectId())
VISA, MASTERCARD = "pm_card_visa", "pm_card_mastercard"


def ms(moment: datetime) -> int:
    return epoch_ms(moment)


def an_order(**fields: object) -> Order:
    """An open order of USER, as the `order:created` listener stores it, with `fields`."""
    order: Order = {
        "_id": ObjectId(),
        "price": 20.0,
        "status": "created",
        "userId": USER,
        "expiresAt": NOW + timedelta(minutes=15),
        "version": 0,
        "rev": 0,
        "attempts": {},
        "tries": 0,
    }
    order.update(fields)
    return order


def an_attempt(
    order: Order, token: str = VISA, status: str = "pending", at: datetime = NOW, **fields: object
) -> Attempt:
    attempt: Attempt = {
        "id": str(ObjectId()),
        "key": attempt_key(str(order["_id"]), token),
        "token": token,
        "status": status,
        "createdAt": ms(at),
        "updatedAt": ms(at),
        "heldUntil": ms(at + HOLD),
    }
    attempt.update(fields)
    return attempt


def with_attempts(order: Order, *attempts: Attempt, kept: str | None = None) -> Order:
    """The order holding `attempts` (by their cards' slots), keeping the card `kept`."""
    order["attempts"] = {attempt_slot(a["token"]): a for a in attempts}
    order["tries"] = len(attempts)
    if kept is not None:
        order["kept"] = attempt_slot(kept)
    return order


def events(update: dict) -> list[tuple[str, dict]]:
    """The events an update stores in the order's outbox: (subject, payload)."""
    entries = [v for k, v in update.get("$set", {}).items() if k.startswith("outbox.")]
    return [(e["subject"], e["data"]) for e in sorted(entries, key=lambda e: e["seq"])]


def refused(error: type[Exception], message: str, call) -> None:
    with pytest.raises(error) as caught:
        call()
    assert caught.value.message == message


# --- which orders may be paid (SPEC §3 payments, its refusals in its order) ----------------------


def test_an_unknown_order_is_not_found():
    refused(NotFoundError, "Not Found", lambda: check_payable(None, USER, NOW))


def test_another_user_s_order_is_not_theirs_to_pay_whatever_its_state():
    order = with_attempts(an_order(status="cancelled", expiresAt=NOW), kept=VISA)
    refused(NotAuthorizedError, "Not authorized", lambda: check_payable(order, "u2", NOW))


def test_a_cancelled_order_is_refused_before_being_paid_or_expired():
    order = an_order(status="cancelled", kept=attempt_slot(VISA), expiresAt=NOW)
    message = "Cannot pay for an cancelled order"
    refused(BadRequestError, message, lambda: check_payable(order, USER, NOW))


def test_a_paid_order_is_refused_before_being_expired():
    order = an_order(kept=attempt_slot(VISA), expiresAt=NOW)
    message = "Order has already been paid"
    refused(BadRequestError, message, lambda: check_payable(order, USER, NOW))


@pytest.mark.parametrize("left", [timedelta(0), timedelta(seconds=-1)], ids=["now", "before"])
def test_an_order_is_expired_from_its_expires_at(left):
    order = an_order(expiresAt=NOW + left)
    refused(BadRequestError, "Order has expired", lambda: check_payable(order, USER, NOW))


def test_an_open_order_of_the_user_may_be_paid():
    order = an_order(status="awaiting:payment")
    assert check_payable(order, USER, NOW) is order


# --- start: an attempt recorded before Stripe is called ------------------------------------------


def test_a_new_card_is_a_new_pending_attempt_held_by_its_request():
    order = an_order()
    slot = attempt_slot(VISA)
    update = start_update(order, USER, VISA, NOW, HOLD)
    assert update is not None
    assert update.keys() == {"$set", "$min", "$inc"}
    attempt = update["$set"][f"attempts.{slot}"]
    assert ObjectId.is_valid(attempt.pop("id"))
    assert attempt == {
        "key": f"{order['_id']}:{VISA}",
        "token": VISA,
        "status": "pending",
        "createdAt": ms(NOW),
        "updatedAt": ms(NOW),
        "heldUntil": ms(NOW) + 35_000,
    }
    assert update["$min"] == {"pendingAt": ms(NOW)}
    assert update["$inc"] == {"tries": 1}


def test_start_refuses_what_check_payable_refuses():
    order = an_order(status="cancelled")
    message = "Cannot pay for an cancelled order"
    refused(BadRequestError, message, lambda: start_update(order, USER, VISA, NOW, HOLD))
    refused(NotFoundError, "Not Found", lambda: start_update(None, USER, VISA, NOW, HOLD))


def test_a_repeat_while_its_request_holds_the_attempt_changes_nothing():
    order = an_order()
    with_attempts(order, an_attempt(order, at=NOW - timedelta(seconds=1)))
    assert start_update(order, USER, VISA, NOW, HOLD) is None


def test_a_repeat_takes_the_attempt_over_once_its_request_let_go():
    order = an_order()
    with_attempts(order, an_attempt(order, heldUntil=ms(NOW)))
    slot = attempt_slot(VISA)
    update = start_update(order, USER, VISA, NOW, HOLD)
    assert update == {"$set": {f"attempts.{slot}.heldUntil": ms(NOW + HOLD)}}


def test_an_order_takes_so_many_cards_and_then_no_new_one():
    order = an_order()
    cards = [f"pm_unknown_{i}" for i in range(MAX_ATTEMPTS)]
    with_attempts(order, *(an_attempt(order, card, "failed", heldUntil=0) for card in cards))
    assert order["tries"] == 20
    message = "Too many payment attempts for this order"
    refused(BadRequestError, message, lambda: start_update(order, USER, VISA, NOW, HOLD))
    # A card tried already is the same attempt, not a new one: not refused for the count.
    assert start_update(order, USER, cards[0], NOW, HOLD) is not None


# --- settle: a charge Stripe confirmed -----------------------------------------------------------


def test_a_charge_of_an_open_order_is_kept_with_payment_created():
    order = an_order()
    attempt = an_attempt(order, at=NOW - timedelta(seconds=5))
    with_attempts(order, attempt)
    at = f"attempts.{attempt_slot(VISA)}"
    update = settle_update(order, attempt_slot(VISA), "pi_1", NOW)
    assert update is not None
    assert {k: v for k, v in update["$set"].items() if not k.startswith("outbox.")} == {
        f"{at}.status": "succeeded",
        f"{at}.stripeId": "pi_1",
        f"{at}.updatedAt": ms(NOW),
        "kept": attempt_slot(VISA),
    }
    assert update["$unset"] == {f"{at}.failure": "", "pendingAt": ""}
    assert "refundDueAt" not in update.get("$min", {})
    payload = {"id": attempt["id"], "orderId": str(order["_id"]), "stripeId": "pi_1"}
    assert events(update) == [("payment.created", payload)]
    assert update["$inc"] == {"outboxRev": 1}


def test_a_charge_after_a_decline_of_the_same_attempt_is_settled():
    """A webhook may report a success after a failure was recorded (Stripe retried it)."""
    order = an_order()
    with_attempts(order, an_attempt(order, status="failed", failure="Your card was declined."))
    update = settle_update(order, attempt_slot(VISA), "pi_1", NOW)
    assert update is not None
    assert update["$set"]["kept"] == attempt_slot(VISA)


def test_a_charge_of_a_cancelled_order_is_due_for_a_refund():
    order = an_order(status="cancelled")
    with_attempts(order, an_attempt(order))
    at = f"attempts.{attempt_slot(VISA)}"
    update = settle_update(order, attempt_slot(VISA), "pi_1", NOW)
    assert update is not None
    assert update["$set"][f"{at}.status"] == "succeeded"
    assert update["$set"][f"{at}.refundDue"] is True
    assert update["$set"][f"{at}.refundReason"] == "the order is cancelled"
    assert update["$min"] == {"refundDueAt": ms(NOW)}
    assert "kept" not in update["$set"]
    assert events(update) == []
    assert "$inc" not in update


def test_a_second_charge_of_an_order_is_due_for_a_refund():
    order = an_order()
    kept = an_attempt(order, status="succeeded", stripeId="pi_0")
    with_attempts(order, kept, an_attempt(order, MASTERCARD), kept=VISA)
    at = f"attempts.{attempt_slot(MASTERCARD)}"
    update = settle_update(order, attempt_slot(MASTERCARD), "pi_1", NOW)
    assert update is not None
    assert update["$set"][f"{at}.refundDue"] is True
    assert update["$set"][f"{at}.refundReason"] == "another payment is kept"
    assert "kept" not in update["$set"]
    assert events(update) == []


@pytest.mark.parametrize("status", ["succeeded", "refunded"])
def test_a_charge_settled_already_changes_nothing(status):
    order = an_order()
    with_attempts(order, an_attempt(order, status=status, stripeId="pi_1"))
    assert settle_update(order, attempt_slot(VISA), "pi_1", NOW) is None


def test_settling_nothing_known_changes_nothing():
    assert settle_update(None, attempt_slot(VISA), "pi_1", NOW) is None
    assert settle_update(an_order(), attempt_slot(VISA), "pi_1", NOW) is None


def test_pending_at_is_the_oldest_attempt_still_pending():
    order = an_order()
    older = an_attempt(order, VISA, at=NOW - timedelta(seconds=20))
    younger = an_attempt(order, MASTERCARD, at=NOW - timedelta(seconds=10))
    with_attempts(order, older, younger)
    settled_older = settle_update(order, attempt_slot(VISA), "pi_1", NOW)
    assert settled_older is not None
    assert settled_older["$set"]["pendingAt"] == younger["createdAt"]
    settled_younger = settle_update(order, attempt_slot(MASTERCARD), "pi_2", NOW)
    assert settled_younger is not None
    assert settled_younger["$set"]["pendingAt"] == older["createdAt"]


# --- fail: Stripe refused the attempt ------------------------------------------------------------


def test_a_refused_attempt_fails_with_its_message_and_intent():
    order = an_order()
    with_attempts(order, an_attempt(order))
    at = f"attempts.{attempt_slot(VISA)}"
    update = fail_update(order, attempt_slot(VISA), "pi_1", "Your card was declined.", NOW)
    assert update == {
        "$set": {
            f"{at}.status": "failed",
            f"{at}.failure": "Your card was declined.",
            f"{at}.updatedAt": ms(NOW),
            f"{at}.stripeId": "pi_1",
        },
        "$unset": {"pendingAt": ""},
    }


def test_a_refusal_without_an_intent_names_none_and_keeps_other_attempts_pending():
    order = an_order()
    other = an_attempt(order, MASTERCARD, at=NOW - timedelta(seconds=3))
    with_attempts(order, an_attempt(order), other)
    at = f"attempts.{attempt_slot(VISA)}"
    update = fail_update(order, attempt_slot(VISA), None, "Invalid value", NOW)
    assert update is not None
    assert f"{at}.stripeId" not in update["$set"]
    assert update["$set"]["pendingAt"] == other["createdAt"]
    assert events(update) == []


@pytest.mark.parametrize("status", ["failed", "succeeded", "refunded"])
def test_only_a_pending_attempt_fails(status):
    order = an_order()
    with_attempts(order, an_attempt(order, status=status))
    assert fail_update(order, attempt_slot(VISA), None, "no", NOW) is None
    assert fail_update(None, attempt_slot(VISA), None, "no", NOW) is None


# --- refunds -------------------------------------------------------------------------------------


def test_a_refund_is_marked_due_before_stripe_is_asked():
    order = an_order(status="cancelled")
    with_attempts(order, an_attempt(order, status="succeeded", stripeId="pi_1"), kept=VISA)
    at = f"attempts.{attempt_slot(VISA)}"
    update = refund_due_update(order, attempt_slot(VISA), "the order is cancelled", NOW)
    assert update == {
        "$set": {
            f"{at}.refundDue": True,
            f"{at}.refundReason": "the order is cancelled",
            f"{at}.updatedAt": ms(NOW),
        },
        "$min": {"refundDueAt": ms(NOW)},
    }


@pytest.mark.parametrize(
    "fields",
    [{"status": "succeeded", "refundDue": True}, {"status": "refunded"}, {"status": "failed"}],
    ids=["due-already", "refunded", "failed"],
)
def test_a_refund_is_marked_due_once_and_only_for_a_charge(fields):
    order = an_order()
    with_attempts(order, an_attempt(order, **fields))
    assert refund_due_update(order, attempt_slot(VISA), "why", NOW) is None


def test_a_refunded_charge_is_no_longer_kept_with_payment_refunded():
    order = an_order(status="cancelled")
    then = NOW - timedelta(minutes=1)
    charge = an_attempt(order, status="succeeded", stripeId="pi_1", refundDue=True, at=then)
    with_attempts(order, charge, kept=VISA)
    order["refundDueAt"] = ms(then)
    at = f"attempts.{attempt_slot(VISA)}"
    update = refunded_update(order, attempt_slot(VISA), NOW)
    assert update is not None
    assert {k: v for k, v in update["$set"].items() if not k.startswith("outbox.")} == {
        f"{at}.status": "refunded",
        f"{at}.refundedAt": ms(NOW),
        f"{at}.updatedAt": ms(NOW),
    }
    assert update["$unset"] == {f"{at}.refundDue": "", "refundDueAt": "", "kept": ""}
    payload = {"id": charge["id"], "orderId": str(order["_id"]), "stripeId": "pi_1"}
    assert events(update) == [("payment.refunded", payload)]


def test_refund_due_at_is_the_oldest_refund_still_due():
    order = an_order()
    kept = an_attempt(order, status="succeeded", stripeId="pi_0")
    older = an_attempt(
        order, MASTERCARD, "succeeded", stripeId="pi_1", refundDue=True, at=NOW - timedelta(1)
    )
    younger = an_attempt(order, "tok_visa", "succeeded", stripeId="pi_2", refundDue=True)
    with_attempts(order, kept, older, younger, kept=VISA)
    update = refunded_update(order, attempt_slot(MASTERCARD), NOW)
    assert update is not None
    assert update["$set"]["refundDueAt"] == younger["updatedAt"]
    assert "kept" not in update["$unset"]  # the order still keeps its own payment


@pytest.mark.parametrize("status", ["pending", "failed", "refunded"])
def test_only_a_charge_is_refunded(status):
    order = an_order()
    with_attempts(order, an_attempt(order, status=status, stripeId="pi_1"))
    assert refunded_update(order, attempt_slot(VISA), NOW) is None
    assert refunded_update(None, attempt_slot(VISA), NOW) is None


# --- outcomes, amounts, names --------------------------------------------------------------------


def test_the_outcome_of_a_settled_charge_follows_the_order():
    order = an_order()
    with_attempts(order, an_attempt(order, status="succeeded"), kept=VISA)
    assert outcome_of(order, attempt_slot(VISA)) is Outcome.KEPT
    order["attempts"][attempt_slot(VISA)]["refundDue"] = True
    assert outcome_of(order, attempt_slot(VISA)) is Outcome.DUPLICATE
    order["status"] = "cancelled"
    assert outcome_of(order, attempt_slot(VISA)) is Outcome.CANCELLED


@pytest.mark.parametrize(
    ("price", "cents"),
    [(20, 2000), (20.15, 2015), (19.99, 1999), (0.29, 29), (0.1, 10), (1234.56, 123456)],
)
def test_amounts_are_the_price_in_cents_rounded(price, cents):
    assert amount_in_cents(price) == cents


def test_an_attempt_is_named_by_its_order_and_card():
    assert attempt_key("o1", VISA) == f"o1:{VISA}"
    slot = attempt_slot("tok.$weird")
    assert len(slot) == 24 and all(c in "0123456789abcdef" for c in slot)
    assert slot == attempt_slot("tok.$weird") != attempt_slot(VISA)


# --- what the reconciler and the webhooks find ---------------------------------------------------


def test_the_reconciler_repeats_a_pending_attempt_only_once_its_request_let_go():
    order = an_order()
    before = NOW - timedelta(seconds=10)
    old = an_attempt(order, at=NOW - timedelta(minutes=1))
    assert is_stale(old, before, NOW)
    assert not is_stale(an_attempt(order, at=NOW - timedelta(seconds=5)), before, NOW)
    assert not is_stale({**old, "heldUntil": ms(NOW) + 1}, before, NOW)
    assert not is_stale({**old, "status": "failed"}, before, NOW)
    due = an_attempt(order, status="succeeded", refundDue=True, at=NOW - timedelta(minutes=1))
    assert is_refund_overdue(due, before)
    assert not is_refund_overdue({**due, "updatedAt": ms(NOW)}, before)
    assert not is_refund_overdue({**due, "refundDue": False}, before)


def test_an_intent_belongs_to_the_attempt_that_stored_it_or_made_it():
    order = an_order()
    stored = an_attempt(order, status="failed", stripeId="pi_1")
    unnamed = an_attempt(order, MASTERCARD)
    with_attempts(order, stored, unnamed)
    assert attempt_of_intent(order, "pi_1", 2000, []) == attempt_slot(VISA)
    assert attempt_of_intent(order, "pi_2", 2000, [VISA]) == attempt_slot(VISA)
    assert attempt_of_intent(order, "pi_2", 2000, []) == attempt_slot(MASTERCARD)
    assert attempt_of_intent(order, "pi_1", 1999, []) is None  # not this order's amount
