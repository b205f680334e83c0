"""The Swarm stack's hardening: a network per datastore shared only with its users, credentials
only from Swarm secrets, a required TAG for the project's images, the Stripe test server only in
its optional file, and datastore images pinned to exact versions.

Both ways to deploy are checked: the stack file alone (the real Stripe API) and with the Stripe
test file on top. NATS permissions and the Redis password run for real in
test_nats_permissions.py and test_redis_auth.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from .deploy import (
    CREDENTIAL_SECRETS,
    DATASTORE_SECRETS,
    DATASTORE_USERS,
    DATASTORES,
    DB_SERVICES,
    HTTP_SERVICES,
    K8S,
    PROJECT_IMAGE,
    SERVICES,
    STACK_FILE,
    STACK_FILES,
    STRIPE_TEST_FILE,
    Doc,
    default_stack,
    names,
    network_members,
    raw_stack,
    reachable,
    settings_names,
    stack,
    stack_config,
    stack_credentials,
    stack_env,
    stack_services,
    tool,
)

VARIANTS = {"default": (STACK_FILE,), "stripe-test": STACK_FILES}
variants = pytest.mark.parametrize("files", VARIANTS.values(), ids=VARIANTS)
# Official images, at an exact release: no floating `7`, `2.10-alpine` or `latest`.
PINNED = re.compile(r"^(?P<name>mongo|nats|redis|nginx):\d+\.\d+\.\d+(?:-alpine)?$")


# --- networks ------------------------------------------------------------------------------------


@variants
def test_every_service_names_its_networks(files: tuple[Path, ...]) -> None:
    """None is left on the stack's default network, which would join them all."""
    for name, service in stack_services(files).items():
        assert names(service.get("networks")), f"{name} falls back to the default network"
    assert "default" not in network_members(files)


@variants
@pytest.mark.parametrize("datastore", DATASTORES)
def test_each_datastore_is_reached_only_by_its_users(
    files: tuple[Path, ...], datastore: str
) -> None:
    networks = names(stack_services(files)[datastore]["networks"])
    assert len(networks) == 1, networks
    (network,) = networks
    assert network_members(files)[network] == {datastore, *DATASTORE_USERS[datastore]}
    assert reachable(datastore, files) == DATASTORE_USERS[datastore]
    # Internal: a datastore has no way out of the swarm either.
    assert stack(files)["networks"][network].get("internal") is True


def test_datastore_users_are_what_the_services_declare() -> None:
    """The users come from the services' own settings, not from a list that could drift."""
    assert DATASTORE_USERS["nats"] == {"tickets", "orders", "payments", "expiration"}
    assert DATASTORE_USERS["redis"] == {"expiration"}
    assert set(DB_SERVICES) == {"auth", "tickets", "orders", "payments"}
    for service in SERVICES:
        assert ("MONGO_URI" in settings_names(service)) == (service in DB_SERVICES), service
        for setting, datastore in (("NATS_URL", "nats"), ("REDIS_URL", "redis")):
            uses = setting in settings_names(service)
            assert uses == (service in DATASTORE_USERS[datastore]), (service, setting)


def test_the_ingress_reaches_only_the_http_services() -> None:
    assert set(HTTP_SERVICES) == {"auth", "tickets", "orders", "payments", "client"}
    assert reachable("ingress", (STACK_FILE,)) == set(HTTP_SERVICES)
    # Test mode: fakestripe posts its webhooks to the ingress, as Stripe does.
    assert reachable("ingress", STACK_FILES) == {*HTTP_SERVICES, "fakestripe"}


def test_fakestripe_is_reached_only_by_payments_and_reaches_only_the_ingress() -> None:
    assert reachable("fakestripe") == {"payments", "ingress"}
    (network,) = names(stack_services()["fakestripe"]["networks"])
    assert network_members()[network] == {"fakestripe", "payments", "ingress"}
    assert stack()["networks"][network].get("internal") is True
    assert network not in network_members((STACK_FILE,)), "the network comes with the test file"


@variants
def test_every_address_a_service_calls_shares_a_network_with_it(files: tuple[Path, ...]) -> None:
    services = stack_services(files)
    for name in services:
        for var, value in stack_env(name, files).items():
            host = re.match(r"^\w+://([\w-]+)", value)
            if host and not var.endswith("_FILE"):
                assert host.group(1) in reachable(name, files), (name, var, value)
    # The datastore addresses are in secrets; their hosts are the datastores themselves.
    for datastore, users in DATASTORE_USERS.items():
        for user in users:
            assert datastore in reachable(user, files)


def test_only_the_ingress_publishes_a_port_and_only_web_net_leads_out() -> None:
    for files in VARIANTS.values():
        published = {n for n, s in stack_services(files).items() if s.get("ports")}
        assert published == {"ingress"}
        open_networks = {
            n for n, net in stack(files)["networks"].items() if not net.get("internal")
        }
        assert open_networks == {"web-net"}, "payments calls the Stripe API through web-net"


# --- secrets -------------------------------------------------------------------------------------


def _secret_paths(service: Doc) -> set[str]:
    """The secrets a service reads: named by its *_FILE settings or by its command."""
    text = " ".join(
        [*(service.get("environment") or {}).values(), *map(str, service.get("command") or [])]
    )
    return set(re.findall(r"/run/secrets/([\w-]+)", text))


@variants
def test_every_secret_is_external_declared_and_used(files: tuple[Path, ...]) -> None:
    doc = stack(files)
    declared = set(doc["secrets"])
    assert all(doc["secrets"][s].get("external") is True for s in declared)
    used: set[str] = set()
    for name, service in doc["services"].items():
        mounted = names(service.get("secrets"))
        # Each service mounts exactly the secrets it reads: no one else's.
        assert mounted == _secret_paths(service), name
        used |= mounted
    assert used == declared


@pytest.mark.parametrize("name", SERVICES)
def test_services_read_their_datastore_credentials_from_their_own_secrets(name: str) -> None:
    env = stack_env(name, (STACK_FILE,))
    assert not set(CREDENTIAL_SECRETS) & set(env)
    credentials = stack_credentials(name)
    assert {k: v for k, v in env.items() if k.removesuffix("_FILE") in CREDENTIAL_SECRETS} == {
        var: f"/run/secrets/{secret}" for var, secret in credentials.items()
    }
    # Another service's credentials are not there.
    mounted = names(stack_services((STACK_FILE,))[name].get("secrets"))
    others = {s for s in mounted if re.fullmatch(r"\w+_(mongo_uri|nats_url|redis_url)", s)}
    assert others == set(credentials.values())


@pytest.mark.parametrize("name", SERVICES)
def test_settings_are_read_from_the_secret_files(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`<NAME>_FILE` works for every credential the stack hands over, with no code change."""
    from importlib.metadata import entry_points

    from ticketing_common.registry import GROUP
    from ticketing_common.settings import load_settings

    (entry,) = (e for e in entry_points(group=GROUP) if e.name == name)
    settings_class = entry.load().settings
    for field in settings_class.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
        monkeypatch.delenv(f"{field.upper()}_FILE", raising=False)
    values = {
        "JWT_KEY": "k" * 32,
        "STRIPE_KEY": "sk-test-value",
        "STRIPE_WEBHOOK_SECRET": "webhook-test-value",
        "MONGO_URI": f"mongodb://root:pw@{name}-mongo:27017/{name}?authSource=admin",
        "NATS_URL": f"nats://{name}:pw@nats:4222",
        "REDIS_URL": "redis://:pw@redis:6379/0",
    }
    env = stack_env(name, (STACK_FILE,))
    for var, path in env.items():
        if var.endswith("_FILE"):
            secret = tmp_path / Path(path).name
            secret.write_text(values[var.removesuffix("_FILE")] + "\n")
            monkeypatch.setenv(var, str(secret))
        else:
            monkeypatch.setenv(var, value=str(path))
    settings = load_settings(settings_class)
    for var in env:
        if var.endswith("_FILE"):
            setting = var.removesuffix("_FILE")
            assert getattr(settings, setting.lower()) == values[setting], setting


@pytest.mark.parametrize("datastore", DATASTORES)
def test_datastores_read_their_passwords_from_secrets(datastore: str) -> None:
    service = stack_services((STACK_FILE,))[datastore]
    assert names(service.get("secrets")) == DATASTORE_SECRETS[datastore]
    env = stack_env(datastore, (STACK_FILE,))
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in env), env
    if datastore.endswith("-mongo"):
        owner = datastore.removesuffix("-mongo")
        assert env["MONGO_INITDB_ROOT_USERNAME_FILE"] == "/run/secrets/mongo_root_username"
        assert env["MONGO_INITDB_ROOT_PASSWORD_FILE"] == f"/run/secrets/{owner}_mongo_root_password"
        assert "--auth" in service["command"], "mongod checks who connects"


# --- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [STACK_FILE, STRIPE_TEST_FILE], ids=lambda p: p.name)
def test_every_project_image_requires_a_tag(path: Path) -> None:
    for name, service in raw_stack(path)["services"].items():
        image = service.get("image")
        if image is None or PINNED.match(image):
            continue
        match = PROJECT_IMAGE.match(image)
        assert match and match.group("name") == name, (name, image)
        assert "build" in service


@variants
def test_a_deploy_without_tag_fails(files: tuple[Path, ...]) -> None:
    """`${TAG:?...}`: an empty TAG fails as an unset one does, before anything is deployed."""
    tool("docker", "/usr/local/bin/docker")
    for env in ({"TAG": ""}, {} if "TAG" not in os.environ else {"TAG": ""}):
        result = stack_config(*files, env=env)
        assert result.returncode != 0
        assert "required variable TAG is missing a value" in result.stderr
    tagged = stack_config(*files, env={"TAG": "1.2.3", "REGISTRY": "registry.example.com/t"})
    assert tagged.returncode == 0, tagged.stderr
    rendered = yaml.safe_load(tagged.stdout)["services"]
    projects = {n: s["image"] for n, s in rendered.items() if not PINNED.match(s["image"])}
    assert projects and all(i == f"registry.example.com/t/{n}:1.2.3" for n, i in projects.items())


@variants
def test_official_images_are_pinned_to_exact_versions(files: tuple[Path, ...]) -> None:
    official = {n: s["image"] for n, s in stack_services(files).items() if "build" not in s}
    assert set(official) == {*DATASTORES, "ingress"}
    for name, image in official.items():
        assert PINNED.match(image), (name, image)


def test_swarm_pins_the_datastores_kubernetes_prod_runs() -> None:
    """One release of each datastore, whichever way the system is deployed."""
    kustomization = yaml.safe_load((K8S / "overlays" / "prod" / "kustomization.yaml").read_text())
    prod = {i["name"]: i["newTag"] for i in kustomization["images"] if "newName" not in i}
    swarm = {}
    for name in DATASTORES:
        image, _, tag = raw_stack()["services"][name]["image"].partition(":")
        swarm.setdefault(image, set()).add(tag)
    assert swarm == {image: {tag} for image, tag in prod.items()}


# --- the optional Stripe test file ---------------------------------------------------------------


def test_fakestripe_is_only_in_the_stripe_test_file() -> None:
    assert "fakestripe" not in raw_stack()["services"]
    assert "fakestripe" not in default_stack()["services"]
    assert "fakestripe" in raw_stack(STRIPE_TEST_FILE)["services"]
    assert "stripe-test-net" not in default_stack()["networks"]


def test_without_the_test_file_payments_calls_the_real_stripe_api() -> None:
    env = stack_env("payments", (STACK_FILE,))
    assert "STRIPE_API_BASE" not in env, "the Stripe SDK's default: https://api.stripe.com"
    assert env["STRIPE_KEY_FILE"] == "/run/secrets/stripe_key"
    assert "STRIPE_API_BASE" in settings_names("payments")


def test_the_test_file_points_payments_at_fakestripe_and_changes_nothing_else() -> None:
    test_file = raw_stack(STRIPE_TEST_FILE)["services"]
    assert stack_env("payments")["STRIPE_API_BASE"] == "http://fakestripe:12111"
    assert stack_env("fakestripe")["PORT"] == "12111"
    # Of the stack file's services, only payments (its Stripe address, the test network) and
    # the ingress (the test network, for the webhooks) change.
    assert test_file["payments"] == {
        "environment": {"STRIPE_API_BASE": "http://fakestripe:12111"},
        "networks": ["stripe-test-net"],
    }
    assert test_file["ingress"] == {"networks": ["stripe-test-net"]}
    assert set(test_file) == {"payments", "ingress", "fakestripe"}
    default, full = stack_services((STACK_FILE,)), stack_services()
    for name in default:
        if name not in {"payments", "ingress"}:
            assert default[name] == full[name], name
