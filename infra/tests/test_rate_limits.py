"""Sign-in and sign-up are limited per client address at the production ingresses (SPEC §1, 429
`Too many requests` with Retry-After), and only those two paths: nginx.conf as written and as
a real nginx runs it, the Swarm port that keeps the client's address, and the Kubernetes Ingress.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ticketing_common.embedded import free_port, wait_for_port

from .deploy import (
    INTERNAL_INGRESS,
    MAIN_INGRESS,
    NGINX_CONF,
    SIGNIN_INGRESS,
    ingress_paths,
    nginx_blocks,
    nginx_directives,
    objects,
    raw_stack,
    stack_services,
    tool,
)

LIMITED = {"/api/users/signin", "/api/users/signup"}
TOO_MANY = {"errors": [{"message": "Too many requests"}]}
TOO_LARGE = {"errors": [{"message": "Request body too large"}]}
PER_MINUTE = 10


# --- nginx.conf as written ------------------------------------------------------------------


def test_nginx_limits_sign_in_and_sign_up_posts_per_client_address() -> None:
    text = nginx_directives()
    key = re.search(r"map \$request_method \$(\w+) \{([^}]*)\}", text)
    assert key, "the limit's key depends on the method"
    cases = dict(line.split() for line in key.group(2).strip().splitlines())
    assert cases == {"POST": "$binary_remote_addr;", "default": '"";'}, "only POSTs count"
    zone = re.search(rf"limit_req_zone \${key.group(1)} zone=(\w+):\w+ rate=(\d+)r/m;", text)
    assert zone and int(zone.group(2)) == PER_MINUTE
    assert "limit_req_status 429;" in text
    limited = {
        location.removeprefix("= "): body
        for location, body in nginx_blocks().items()
        if "limit_req " in body
    }
    assert set(limited) == LIMITED and all(p in nginx_blocks() for p in ("= " + x for x in LIMITED))
    for body in limited.values():
        burst = re.search(rf"limit_req zone={zone.group(1)} burst=(\d+) nodelay;", body)
        assert burst and 0 < int(burst.group(1)) <= PER_MINUTE
        assert "set $upstream http://auth:3000;" in body


def test_nginx_answers_its_refusals_in_the_spec_body() -> None:
    text = nginx_directives()
    blocks = nginx_blocks()
    for status, body in ((429, TOO_MANY), (413, TOO_LARGE)):
        page = re.search(rf"error_page {status} = (@\w+);", text)
        assert page, status
        handler = blocks[page.group(1)]
        assert "default_type application/json;" in handler
        answer = re.search(rf"return {status} '([^']*)';", handler)
        assert answer and json.loads(answer.group(1)) == body
    retry = re.search(r"add_header Retry-After (\d+) always;", blocks["@too_many_requests"])
    assert retry and int(retry.group(1)) == 60 // PER_MINUTE, "when the next request gets in"
    assert "proxy_intercept_errors" not in text, "the services' own 429s pass untouched"


def test_swarm_publishes_the_ingress_in_host_mode_on_every_node() -> None:
    """The routing mesh would show nginx its own address for every client, and one count
    would then limit everybody's sign-ins."""
    ingress = stack_services()["ingress"]
    assert [p["mode"] for p in ingress["ports"]] == ["host"]
    deploy = raw_stack()["services"]["ingress"]["deploy"]
    assert deploy["mode"] == "global"
    assert deploy["update_config"]["order"] == "stop-first", "one task holds a node's port 80"
    assert deploy["rollback_config"]["order"] == "stop-first"


# --- nginx.conf as nginx runs it --------------------------------------------------------------


class Upstream(BaseHTTPRequestHandler):
    """Every service at once: 200 with the path, or auth's own 429 at /api/users/locked."""

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        locked = self.path == "/api/users/locked"
        body = json.dumps(TOO_MANY if locked else {"path": self.path}).encode()
        self.send_response(429 if locked else 200)
        if locked:
            self.send_header("Retry-After", "900")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def local_conf(text: str, port: int, health_port: int, upstream: int, root: Path) -> str:
    """nginx.conf on local ports, every service at `upstream`, run by the current user."""
    edits = [
        (r"^user \S+;\n", ""),
        (r"^pid \S+;", f"pid {root}/nginx.pid;"),
        (r"listen 80;", f"listen 127.0.0.1:{port};"),
        (r"listen 8081;", f"listen 127.0.0.1:{health_port};"),
        (r"http://[\w-]+:3000;", f"http://127.0.0.1:{upstream};"),
    ]
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        assert count, pattern
    return text


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx.conf served by a real nginx, in front of one stand-in upstream."""
    binary = tool("nginx", "/usr/sbin/nginx")
    root = tmp_path_factory.mktemp("nginx")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    conf = root / "nginx.conf"
    text = NGINX_CONF.read_text()
    conf.write_text(local_conf(text, port, free_port(), upstream.server_port, root))
    run = [binary, "-e", "stderr", "-p", str(root), "-c", str(conf)]
    checked = subprocess.run([*run, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    log = (root / "nginx.log").open("wb")
    process = subprocess.Popen([*run, "-g", "daemon off;"], stdout=log, stderr=log)
    try:
        wait_for_port(port, process, "nginx", 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(15)
        log.close()
        upstream.shutdown()
        upstream.server_close()


def test_nginx_lets_other_paths_and_methods_through_unlimited(nginx: str) -> None:
    with httpx.Client(base_url=nginx, trust_env=False) as client:
        others = [client.post("/api/users/signout", json={}) for _ in range(30)]
        others += [client.get("/api/users/signin") for _ in range(30)]
        others += [client.post("/api/users/signin/x", json={}) for _ in range(30)]
    assert {a.status_code for a in others} == {200}


def test_nginx_refuses_sign_ins_past_the_burst_with_the_spec_429(nginx: str) -> None:
    with httpx.Client(base_url=nginx, trust_env=False) as client:
        answers = [client.post("/api/users/signin", json={}) for _ in range(3 * PER_MINUTE)]
        after = client.post("/api/users/signup", json={})
    statuses = [a.status_code for a in answers]
    assert statuses[0] == 200 and 429 in statuses
    assert set(statuses) == {200, 429}
    refused = answers[statuses.index(429)]
    assert refused.json() == TOO_MANY
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["retry-after"] == str(60 // PER_MINUTE)
    assert after.status_code == 429, "sign-up shares the sign-in count"


def test_nginx_passes_the_services_own_429_untouched(nginx: str) -> None:
    with httpx.Client(base_url=nginx, trust_env=False) as client:
        answer = client.get("/api/users/locked")
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "900"


def test_nginx_refuses_a_body_over_one_mebibyte_with_the_spec_413(nginx: str) -> None:
    with httpx.Client(base_url=nginx, trust_env=False) as client:
        refused = client.post("/api/tickets", content=b"x" * (5 * 1000 * 1000))
        accepted = client.post("/api/tickets", content=b"x" * (1 << 20))
    assert refused.status_code == 413
    assert refused.json() == TOO_LARGE
    assert accepted.status_code == 200


# --- Kubernetes (ingress-nginx) ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_a_separate_ingress_limits_only_sign_in_and_sign_up(overlay: str) -> None:
    ingresses = objects(overlay, "Ingress")
    assert set(ingresses) == {MAIN_INGRESS, SIGNIN_INGRESS, INTERNAL_INGRESS}
    main, signin = ingresses[MAIN_INGRESS], ingresses[SIGNIN_INGRESS]
    assert ingress_paths(signin) == {path: ("Exact", "auth", "http") for path in LIMITED}
    notes = signin["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/limit-rpm"] == str(PER_MINUTE)
    assert int(notes["nginx.ingress.kubernetes.io/limit-burst-multiplier"]) == 1
    limits = [
        n
        for ingress in (main, ingresses[INTERNAL_INGRESS])
        for n in ingress["metadata"]["annotations"]
        if "/limit-" in n
    ]
    assert limits == [], "nothing else is limited"
    assert signin["spec"]["ingressClassName"] == main["spec"]["ingressClassName"]
    assert signin["spec"]["rules"][0]["host"] == main["spec"]["rules"][0]["host"]
    for name in ("proxy-body-size", "ssl-redirect", "force-ssl-redirect"):
        key = f"nginx.ingress.kubernetes.io/{name}"
        assert notes.get(key) == main["metadata"]["annotations"].get(key), name
    assert signin["spec"].get("tls") == main["spec"].get("tls")
