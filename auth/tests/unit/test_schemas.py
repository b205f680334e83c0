"""Auth's bodies, no server: the SPEC's validation messages and the JSON of each answer."""

import pytest
from pydantic import BaseModel, ValidationError

from ticketing_auth.schemas import CurrentUserOut, SignedOut, SignIn, SignUp, UserOut
from ticketing_common.sessions import CurrentUser
from ticketing_common.web import validation_items

EMAIL = {"message": "Email must be valid", "field": "email"}
LENGTH = {"message": "Password must be between 4 and 20 characters", "field": "password"}
SUPPLY = {"message": "You must supply a password", "field": "password"}


def errors(model: type[BaseModel], data: object) -> list[dict[str, str]]:
    """The SPEC error items a request body `data` gets (as the web edge maps them)."""
    with pytest.raises(ValidationError) as failed:
        model.model_validate(data)
    found = [{**e, "loc": ("body", *e["loc"])} for e in failed.value.errors()]
    status, items = validation_items(found)
    assert status == 400
    return items


def test_signup_trims_and_lower_cases_the_email_and_trims_the_password():
    body = SignUp.model_validate({"email": "  Mixed@Case.COM ", "password": "  pass  "})
    assert (body.email, body.password) == ("mixed@case.com", "pass")


@pytest.mark.parametrize("email", ["alskdflaskjfd", "", "   ", None, 12, ["a@b.co"]])
def test_signup_email_must_be_valid(email):
    assert errors(SignUp, {"email": email, "password": "password"}) == [EMAIL]


@pytest.mark.parametrize("password", ["p", "p" * 21, "   ab   ", 1234, None, ""])
def test_signup_password_must_be_4_to_20_characters(password):
    assert errors(SignUp, {"email": "test@test.com", "password": password}) == [LENGTH]


def test_signup_password_of_4_and_20_characters_is_accepted():
    for password in ("abcd", "a" * 20, "  abcd  "):
        SignUp.model_validate({"email": "test@test.com", "password": password})


def test_missing_fields_report_every_rule():
    assert errors(SignUp, {}) == [EMAIL, LENGTH]
    assert errors(SignIn, {}) == [EMAIL, SUPPLY]


def test_signin_needs_a_valid_email_and_a_password():
    assert errors(SignIn, {"email": "nope", "password": "   "}) == [EMAIL, SUPPLY]
    assert errors(SignIn, {"email": "test@test.com", "password": 5}) == [SUPPLY]
    body = SignIn.model_validate({"email": " Test@Test.com", "password": "x "})
    assert (body.email, body.password) == ("test@test.com", "x")


@pytest.mark.parametrize("data", [[1, 2], "text", None])
def test_a_body_that_is_not_an_object_is_refused(data):
    assert errors(SignUp, data) == [{"message": "Request body must be a JSON object"}]


def test_answers_have_the_spec_json():
    user = UserOut(id="0123456789abcdef01234567", email="a@b.co")
    assert user.model_dump(mode="json") == {"id": "0123456789abcdef01234567", "email": "a@b.co"}
    assert SignedOut().model_dump(mode="json") == {}
    assert CurrentUserOut(currentUser=None).model_dump(mode="json") == {"currentUser": None}
    current = CurrentUser(id="u1", email="a@b.co", iat=1, exp=86401)
    assert CurrentUserOut(currentUser=current).model_dump(mode="json") == {
        "currentUser": {"id": "u1", "email": "a@b.co", "iat": 1, "exp": 86401}
    }
