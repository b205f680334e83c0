"""Users talking to a running stack through its ingress, for the system tests."""

import asyncio
import uuid

import httpx

from ticketing_testing import eventually


class User:
    """A signed-up user with their own cookie jar, talking through the ingress."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=120)  # a loaded machine is slow
        self.email = f"{uuid.uuid4().hex[:10]}@test.dev"

    async def signup(self) -> "User":
        body = {"email": self.email, "password": "password"}

        async def attempt() -> httpx.Response | None:
            # Auth refuses sign-ups beyond its hashing queue with 503 and `Retry-After`, as a
            # burst of dozens at once gets: a client comes back when it says.
            response = await self.http.post("/api/users/signup", json=body)
            if response.status_code == 503:
                await asyncio.sleep(float(response.headers["Retry-After"]))
                return None
            return response

        response = await eventually(attempt, within=300)
        assert response.status_code == 201, response.text
        self.id = response.json()["id"]
        return self

    async def sell(self, title: str = "concert", price: float = 20) -> dict:
        response = await self.http.post("/api/tickets", json={"title": title, "price": price})
        assert response.status_code == 201, response.text
        return response.json()

    async def order(self, ticket_id: str) -> httpx.Response:
        return await self.http.post("/api/orders", json={"ticketId": ticket_id})

    async def order_when_orderable(self, ticket_id: str) -> dict:
        """Order as soon as the orders service has replicated the ticket."""

        async def attempt():
            response = await self.order(ticket_id)
            if response.status_code == 404:
                return None
            assert response.status_code == 201, response.text
            return response.json()

        return await eventually(attempt)

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path)

    async def close(self) -> None:
        await self.http.aclose()


def user_factory(base_url: str):
    """An async context manager giving `make()`, which signs up a new user."""

    class Users:
        def __init__(self) -> None:
            self.made: list[User] = []

        async def __aenter__(self):
            return self.make

        async def make(self) -> User:
            user = await User(base_url).signup()
            self.made.append(user)
            return user

        async def __aexit__(self, *exc) -> None:
            await asyncio.gather(*(u.close() for u in self.made))

    return Users()


async def listed(user: User, ticket_id: str) -> bool:
    tickets = (await user.get("/api/tickets")).json()
    return any(t["id"] == ticket_id for t in tickets)
