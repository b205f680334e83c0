"""The error pages' texts for each status."""

from __future__ import annotations

from ticketing_client.error_pages import error_text


def test_form_token_and_not_found_pages() -> None:
    assert error_text(403, "Invalid or missing form token") == (
        "Invalid or missing form token",
        "The form was not accepted and nothing was done. Go back, reload the page and try again.",
    )
    assert error_text(404, "Not Found") == (
        "Page not found",
        "There is no such ticket, order or page.",
    )


def test_other_refusals_show_their_message() -> None:
    assert error_text(401, "Not authorized") == ("Not authorized", "Please try again in a moment.")


def test_server_errors_show_the_apis_message_when_there_is_one() -> None:
    assert error_text(503, "Service unavailable") == (
        "Service unavailable",
        "Please try again in a moment.",
    )
    assert error_text(502, "Orders are down") == ("Something went wrong", "Orders are down")
    assert error_text(500, "Something went wrong") == (
        "Something went wrong",
        "Please try again in a moment.",
    )
