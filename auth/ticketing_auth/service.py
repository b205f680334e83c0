"""The auth service, declared once: sign up, sign in, sign out, who is signed in."""

from __future__ import annotations

from ticketing_auth.repository import INDEXES, Accounts
from ticketing_auth.routes import users
from ticketing_auth.settings import Settings
from ticketing_common.service import Service

SERVICE: Service[Settings, Accounts] = Service(
    settings=Settings,
    api_prefix="/api/users",
    routers=[users.router],
    indexes=INDEXES,
    context=Accounts.of,
)
