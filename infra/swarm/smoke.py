"""Swarm smoke deployment: the checkout's stack file, unchanged, on a private one-node swarm.

    .venv/bin/python infra/swarm/smoke.py           # every step, then clean up
    .venv/bin/python infra/swarm/smoke.py --cold    # delete the caches in .data/swarm first

Steps, each timed (summary at the end):
  1. a private dockerd (own data-root, exec-root, socket), `docker swarm init`, node labels;
  2. images: stand-ins for the images that cannot be pulled (built from a Debian rootfs, under
     the exact names the stack uses, each printed as STAND-IN), then the project's images from
     the root Dockerfile with the stack file's build args;
  3. the secrets by README's "Secrets" block, `docker stack deploy` of docker-compose.yml +
     docker-compose.stripe-test.yml + a generated override (endpoint_mode dnsrr: no IPVS here);
  4. wait until every service runs all its tasks, healthy;
  5. a purchase through the ingress: sign up, sell, order, pay, complete;
  6. isolation: the client reaches no MongoDB, NATS refuses a publish without the right user;
  7. roll one service to a new tag under a request loop: no request may fail;
  8. kill one task's container and wait for Swarm to replace it;
  9. remove the stack, leave the swarm, stop dockerd.

Needs root, dockerd and docker (Debian: docker.io), mmdebstrap, and PyYAML (the project venv).
See infra/swarm/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
STACK_FILES = [ROOT / "docker-compose.yml", ROOT / "docker-compose.stripe-test.yml"]
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"  # the last Debian with python3.11
STANDIN_LABEL = "ticketing-smoke.standin"

# The stand-ins' base: a Debian rootfs (mmdebstrap) with these packages, then this Dockerfile.
ROOTFS = ["python3.11", "python3-pip", "ca-certificates", "passwd", "wget"]
ROOTFS += ["nginx-light", "redis-server", "redis-tools", "nats-server"]
BASE_DOCKERFILE = """\
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN ln -s /usr/bin/python3.11 /usr/local/bin/python \\
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \\
 && printf '#!/bin/sh\\nexec python3.11 -m pip "$@"\\n' >/usr/local/bin/pip \\
 && chmod 755 /usr/local/bin/pip
ENV LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt UV_NATIVE_TLS=1
CMD ["python3"]
"""
# Stand-ins by image repository: (what it is, its Dockerfile after FROM the base). The scripts
# they copy are in standins/.
STANDINS_BY_REPO: dict[str, tuple[str, str]] = {
    "python": ("Debian's python3.11 and pip", ""),
    "mongo": (
        "nx-27017 (MongoDB's wire protocol on SQLite) with SCRAM auth, mongod/mongosh shims",
        """\
ARG NX_VERSION
RUN pip install --no-cache-dir "nx-27017==${NX_VERSION}" && mkdir -p /data/db
COPY mongod mongosh /usr/local/bin/
VOLUME /data/db
CMD ["mongod", "--bind_ip_all"]
""",
    ),
    "nats": (
        "Debian's nats-server 2.9",
        """\
COPY nats-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p /data
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["nats-server", "-m", "8222"]
""",
    ),
    "redis": (
        "Debian's redis-server 7.0",
        """\
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p /data
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
""",
    ),
    "nginx": (
        "Debian's nginx-light 1.22",
        """\
RUN useradd --system --no-create-home --shell /usr/sbin/nologin nginx \\
 && ln -sf /dev/stderr /var/log/nginx/error.log && ln -sf /dev/stdout /var/log/nginx/access.log
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
""",
    ),
}

T0 = time.monotonic()
SUMMARY: list[str] = []


class Failed(Exception):
    """A step failed; the message says why."""


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Log and time one step; its line goes into the summary."""
    log(f"=== {name}")
    start = time.monotonic()
    status = "FAIL"
    try:
        yield
        status = "ok"
    finally:
        SUMMARY.append(f"{status:4} {time.monotonic() - start:6.1f}s  {name}")
        log(f"=== {name}: {status} in {time.monotonic() - start:.1f}s")


def wait_for(what: str, check: Callable[[], Any], timeout: float, pause: float = 1) -> Any:
    """Call check until it returns something true; Failed after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException, Failed):
            if result := check():
                return result
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout:.0f}s")
        time.sleep(pause)


# --- the engine --------------------------------------------------------------------------------


class Docker:
    """A private dockerd (data-root in the work folder) and the docker CLI talking to it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.pidfile = work / "dockerd.pid"
        # The exec-root holds unix sockets (108 bytes at most): a short path under /tmp.
        self.run_dir = Path(tempfile.mkdtemp(prefix="tsw.", dir="/tmp"))
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.run_dir}/docker.sock",
            "DOCKER_BUILDKIT": "1",
            "DOCKER_CONFIG": str(self.run_dir / "cli"),  # none of the user's auths or contexts
            "PATH": f"{Path(DOCKER).parent}:{os.environ['PATH']}",  # for README's block
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Stop a dockerd that a crashed run left on this data-root, then start ours."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text())
            if str(self.work / "docker").encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                log(f"stopping dockerd {pid}, left by an earlier run")
                os.kill(pid, signal.SIGTERM)
                wait_for("old dockerd stops", lambda: not Path(f"/proc/{pid}").exists(), 60, 0.2)
        with (self.work / "dockerd.log").open("ab") as logfile:
            self.proc = subprocess.Popen(
                [
                    *("dockerd", "--data-root", str(self.work / "docker"), "--log-level", "warn"),
                    *("--exec-root", str(self.run_dir / "exec"), "--pidfile", str(self.pidfile)),
                    *("-H", self.env["DOCKER_HOST"]),
                ],
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Swarm would try to pull every image (none can be) before it uses a local one.
                env={**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},
            )
        wait_for("dockerd answers", lambda: self("version", check=False, quiet=True), 60, 0.3)

    def stop(self) -> None:
        """Stop dockerd and remove its exec-root."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        mounts = [m for line in lines if (m := line.split()[4]).startswith(str(self.run_dir))]
        for mount in sorted(mounts, reverse=True):  # netns files dockerd leaves mounted
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __call__(self, *args: str, check: bool = True, quiet: bool = False) -> str:
        """Run `docker ARGS`; its output, stripped, or "" if it failed and check is false."""
        if not quiet:
            log("$ docker " + " ".join(args))
        result = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            if check:
                raise Failed(f"docker {' '.join(args)}: {result.stderr.strip()[-2000:]}")
            return ""
        return result.stdout.strip()

    def containers(self, service: str) -> list[str]:
        """The ids of the running containers of a service (ticketing_orders, ...)."""
        label = f"label=com.docker.swarm.service.name={service}"
        return self("ps", "-q", "-f", label, quiet=True).split()

    def exec_python(self, container: str, code: str) -> Any:
        """Run Python code in a container; what it prints, as JSON."""
        return json.loads(self("exec", container, "python", "-c", code, quiet=True))


# --- the stack file ----------------------------------------------------------------------------


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """${VAR}, ${VAR:-default}, ${VAR:?error} and $$, as docker stack deploy reads them."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name is None:
            return "$"
        if env.get(name):
            return env[name]
        if op == ":?":
            raise Failed(f"the stack file needs {name}: {arg}")
        return arg or ""

    return re.sub(r"\$(?:\$|\{(\w+)(?:(:[-?])([^}]*))?\})", sub, value)


def load_stack(env: dict[str, str]) -> dict[str, Any]:
    """The services and secrets of the stack files, merged one level deep."""
    stack: dict[str, Any] = {}
    for path in STACK_FILES:
        doc = interpolate(yaml.safe_load(path.read_text()), env)
        for key in ("services", "secrets"):
            section = stack.setdefault(key, {})
            for name, spec in doc.get(key, {}).items():
                section[name] = {**section.get(name, {}), **(spec or {})}
    return stack


def dockerfile_bases(dockerfile: Path) -> list[str]:
    """The images a Dockerfile starts FROM (global ARG defaults filled in, stages left out)."""
    text = dockerfile.read_text()
    args = dict(re.findall(r"(?m)^ARG (\w+)=(\S+)", text.split("\nFROM ", 1)[0]))
    bases = []
    for image in re.findall(r"(?mi)^FROM\s+(\S+)", text):
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), image)
        if image not in bases and not re.search(
            rf"(?mi)^FROM\s+\S+\s+AS\s+{re.escape(image)}\b", text
        ):
            bases.append(image)
    return bases


def repository(image: str) -> str:
    """'nginx' for nginx:1.27, docker.io/library/nginx:1.27, ..."""
    return image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]


# --- step 2: images ----------------------------------------------------------------------------


def rootfs(cache: Path) -> Path:
    """A Debian rootfs tarball with the ROOTFS packages (kept in the cache)."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {ROOTFS}".encode()).hexdigest()[:12]
    tarball = cache / f"{SUITE}-{key}.tar"
    if not tarball.exists():
        log(f"mmdebstrap {SUITE}: {' '.join(ROOTFS)}")
        excluded = [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale")]
        result = subprocess.run(
            [
                *("mmdebstrap", "--variant=essential", "--include=" + ",".join(ROOTFS)),
                *("--dpkgopt=force-unsafe-io", *excluded, "--format=tar"),
                *(SUITE, str(tarball.with_suffix(".partial")), MIRROR),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise Failed(f"mmdebstrap: {result.stderr.strip()[-1500:]}")
        tarball.with_suffix(".partial").rename(tarball)
    return tarball


def build(docker: Docker, image: str, dockerfile: str, cache: Path, *args: str) -> None:
    """docker build FROM dockerfile text, with standins/ and the host's CA bundle (for pip
    behind a TLS-inspecting proxy) in the context."""
    with tempfile.TemporaryDirectory(dir=cache) as context:
        for path in STANDINS.iterdir():
            shutil.copy(path, context)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", context)
        Path(context, "Dockerfile").write_text(dockerfile)
        label = f"{STANDIN_LABEL}=1"
        docker("build", "-q", "--network", "host", "--label", label, "-t", image, *args, context)


def build_images(docker: Docker, stack: dict[str, Any], cache: Path) -> None:
    """Stand-ins for the images neither present nor pullable, then the stack's own images."""
    services = stack["services"]
    dockerfiles = {ROOT / s["build"]["dockerfile"] for s in services.values() if "build" in s}
    external = [base for path in sorted(dockerfiles) for base in dockerfile_bases(path)]
    external += [s["image"] for s in services.values() if "build" not in s]
    missing = []
    for image in dict.fromkeys(external):
        labels = docker("image", "inspect", "-f", "{{json .Config.Labels}}", image, check=False)
        if labels and STANDIN_LABEL not in labels:
            log(f"{image}: present")
        elif not labels and docker("pull", "-q", image, check=False):
            log(f"{image}: pulled")
        elif repository(image) in STANDINS_BY_REPO:
            missing.append(image)  # a stand-in of an earlier run is rebuilt: from the cache
        else:
            raise Failed(f"{image} cannot be pulled and has no stand-in")
    if missing:
        tarball = rootfs(cache)
        base = f"ticketing-smoke/base:{tarball.stem}"
        if not docker("image", "inspect", base, check=False, quiet=True):
            docker("import", str(tarball), f"{base}-rootfs")
            build(docker, base, f"FROM {base}-rootfs\n{BASE_DOCKERFILE}", cache)
        nx = re.search(r'name = "nx-27017"\nversion = "([^"]+)"', (ROOT / "uv.lock").read_text())
        for image in missing:
            what, recipe = STANDINS_BY_REPO[repository(image)]
            nx_version = f"NX_VERSION={nx.group(1) if nx else ''}"
            build(docker, image, f"FROM {base}\n{recipe}", cache, "--build-arg", nx_version)
            print(f"STAND-IN: {image} is a local build, not the upstream image: {what}", flush=True)
    for spec in services.values():
        if spec_build := spec.get("build"):
            started = time.monotonic()
            args = [f"--build-arg={k}={v}" for k, v in spec_build.get("args", {}).items()]
            dockerfile = str(ROOT / spec_build["dockerfile"])
            context = str(ROOT / spec_build["context"])
            docker(
                "build",
                "-q",
                "--network",
                "host",
                "-t",
                spec["image"],
                *args,
                "-f",
                dockerfile,
                context,
            )
            log(f"built {spec['image']} in {time.monotonic() - started:.0f}s")


# --- step 3: secrets and deploy ----------------------------------------------------------------


def create_secrets(docker: Docker, stack: dict[str, Any]) -> None:
    """Run the first sh block under README's "#### N. Secrets" as it is; check it made them all."""
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"(?ms)^#### \d+\. Secrets$(.*?)^#{2,4} ", readme)
    block = re.search(r"(?s)```sh\n(.*?)```", section.group(1)) if section else None
    if not block:
        raise Failed('README.md has no sh block under "#### N. Secrets"')
    log("README's Secrets block:\n    " + block.group(1).strip().replace("\n", "\n    "))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.group(1)],
        env=docker.env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise Failed(f"README's Secrets block: {result.stderr.strip()[-1000:]}")
    made = set(docker("secret", "ls", "--format", "{{.Name}}", quiet=True).split())
    wanted = {spec.get("name", name) for name, spec in stack["secrets"].items()}
    if wanted - made:
        raise Failed(f"README's Secrets block does not create {', '.join(sorted(wanted - made))}")
    log(f"{len(wanted)} secrets, as README says")


def write_override(stack: dict[str, Any], work: Path) -> Path:
    """What a kernel without IPVS lacks: DNS round robin instead of a virtual IP (no routing
    mesh either: the stack publishes its port in host mode, which is checked here)."""
    for name, spec in stack["services"].items():
        for port in spec.get("ports", []):
            if not isinstance(port, dict) or port.get("mode") != "host":
                raise Failed(f"{name} publishes {port}: only host mode works without IPVS")
    services = {name: {"deploy": {"endpoint_mode": "dnsrr"}} for name in stack["services"]}
    path = work / "docker-compose.smoke.yml"
    path.write_text(
        "# Written by infra/swarm/smoke.py: no IPVS on this kernel, so no virtual IPs.\n"
        + yaml.safe_dump({"version": "3.9", "services": services}, sort_keys=False)
    )
    return path


# --- steps 4 to 8 ------------------------------------------------------------------------------


def unready(docker: Docker, stack_name: str, services: list[str]) -> list[str]:
    """The services short of tasks or with a container not (yet) healthy, as name=running/want."""
    lines = docker("service", "ls", "--format", "{{.Name}} {{.Replicas}}", quiet=True)
    replicas = dict(line.split(" ", 1) for line in lines.splitlines())
    status = '{{.Label "com.docker.swarm.service.name"}} {{.Status}}'
    health = docker("ps", "--format", status, quiet=True).splitlines()
    starting = {line.split()[0] for line in health if "starting)" in line or "unhealthy" in line}
    waiting = []
    for name in services:
        state = replicas.get(f"{stack_name}_{name}", "0/?").split()[0]
        running, wanted = state.split("/")
        if running != wanted or f"{stack_name}_{name}" in starting:
            waiting.append(f"{name}={state}")
    return waiting


def wait_healthy(docker: Docker, stack_name: str, services: list[str]) -> None:
    """Wait until every service runs all its tasks, healthy; log what it waits for."""
    last: list[str] = []

    def ready() -> bool:
        nonlocal last
        if (waiting := unready(docker, stack_name, services)) != last:
            log("waiting for: " + " ".join(waiting))
            last = waiting
        return not waiting

    wait_for("every service healthy", ready, 420, 3)


class Client:
    """HTTP/1.1 to the ingress on 127.0.0.1, keeping the session cookie. The cookie is Secure:
    sent by hand over plain http."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request; (status, JSON body or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            headers = {"Content-Type": "application/json", "Cookie": self.cookie}
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if cookie := response.getheader("Set-Cookie"):
            self.cookie = cookie.split(";", 1)[0]
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")[:200]

    def expect(self, status: int, method: str, path: str, body: Any = None) -> Any:
        """The JSON body of a request that must answer status."""
        got, data = self.call(method, path, body)
        if got != status:
            raise Failed(f"{method} {path}: {got} {data}")
        return data


def purchase(port: int) -> tuple[Client, str]:
    """Sign up a seller and a buyer, sell, order, pay with pm_card_visa, wait for complete."""
    run = uuid.uuid4().hex[:8]
    seller, buyer = Client(port), Client(port)
    for who, user in (("seller", seller), ("buyer", buyer)):
        user.expect(
            201,
            "POST",
            "/api/users/signup",
            {"email": f"{who}-{run}@example.com", "password": "smoke-pass"},
        )
    ticket = seller.expect(201, "POST", "/api/tickets", {"title": f"smoke {run}", "price": 20.5})
    print(f"PURCHASE: ticket {ticket['id']} for sale at {ticket['price']}", flush=True)
    # orders learns of the ticket by its ticket.created event: 404 until then.
    order = wait_for(
        "order",
        lambda: buyer.expect(201, "POST", "/api/orders", {"ticketId": ticket["id"]}),
        60,
    )
    print(f"PURCHASE: order {order['id']} {order['status']}", flush=True)
    payment = wait_for(
        "payment",
        lambda: buyer.expect(
            201, "POST", "/api/payments", {"orderId": order["id"], "token": "pm_card_visa"}
        ),
        60,
    )
    print(f"PURCHASE: payment {payment['id']} with pm_card_visa", flush=True)
    wait_for(
        "order complete",
        lambda: buyer.expect(200, "GET", f"/api/orders/{order['id']}")["status"] == "complete",
        60,
    )
    print(f"PURCHASE: order {order['id']} complete", flush=True)
    return buyer, order["id"]


# Does a datastore answer at (host, port)? Its own protocol, not a TCP connect: this network
# accepts outbound TCP connections to any address. MongoDB: OP_MSG {hello: 1, $db: "admin"};
# NATS: its INFO greeting; Redis: PING (+PONG, or -NOAUTH).
PROBE = """
import json, socket, struct
doc = b"\\x10hello\\x00" + struct.pack("<i", 1)
doc += b"\\x02$db\\x00" + struct.pack("<i", 6) + b"admin\\x00"
doc = struct.pack("<i", len(doc) + 5) + doc + b"\\x00"
hello = struct.pack("<iiii", 16 + 5 + len(doc), 1, 0, 2013) + b"\\x00" * 5 + doc
result = {}
for host, port in HOSTS:
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall({27017: hello, 6379: b"PING\\r\\n"}.get(port, b""))
            data = s.recv(4096)
        mongo = len(data) >= 16 and struct.unpack_from("<i", data, 12)[0] == 2013
        ok = mongo or data.startswith((b"INFO", b"+PONG", b"-NOAUTH"))
        result[f"{host}:{port}"] = f"answered {data[:24]!r}" if ok else f"no answer {data[:24]!r}"
    except OSError as error:
        result[f"{host}:{port}"] = f"no answer: {error}"
print(json.dumps(result))
"""

# The NATS protocol by hand (stdlib only): CONNECT as a user, publish, PING; the server's answer.
NATS_PUBLISH = """
import json, socket, urllib.parse
def attempt(user, password, subject):
    with socket.create_connection(("nats", 4222), timeout=5) as s:
        s.recv(4096)  # INFO
        auth = {"user": user, "pass": password} if user else {}
        connect = json.dumps({"verbose": False, "pedantic": False, **auth})
        s.sendall(f"CONNECT {connect}\\r\\nPUB {subject} 2\\r\\n{{}}\\r\\nPING\\r\\n".encode())
        answer = b""
        while b"PONG" not in answer and b"-ERR" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer.decode().strip()
url = urllib.parse.urlsplit(open("/run/secrets/tickets_nats_url").read().strip())
print(json.dumps({
    "no credentials, ticket.updated": attempt(None, None, "ticket.updated"),
    "tickets, order.created": attempt(url.username, url.password, "order.created"),
    "tickets, $JS.API.INFO": attempt(url.username, url.password, "$JS.API.INFO"),
}))
"""


def isolation(docker: Docker, stack_name: str) -> None:
    """The client reaches no datastore, by name or address, while tickets reaches its own;
    NATS refuses a client without credentials and tickets publishing orders' subject."""
    datastores = {"auth-mongo": 27017, "tickets-mongo": 27017, "orders-mongo": 27017}
    datastores |= {"payments-mongo": 27017, "nats": 4222, "redis": 6379}
    hosts = list(datastores.items())
    for name, port in datastores.items():
        (container,) = docker.containers(f"{stack_name}_{name}")
        address = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        hosts.append((docker("inspect", "-f", address, container, quiet=True), port))
    client = docker.containers(f"{stack_name}_client")[0]
    tickets = docker.containers(f"{stack_name}_tickets")[0]
    reached = docker.exec_python(client, f"HOSTS = {hosts!r}\n{PROBE}")
    own = docker.exec_python(tickets, f"HOSTS = {hosts[1:2]!r}\n{PROBE}")
    print(
        "ISOLATION: (this network answers TCP to any address: only a datastore's own answer counts)"
    )
    for who, results in (("client", reached), ("tickets", own)):
        for target, result in results.items():
            print(f"ISOLATION: {who} -> {target}: {result}", flush=True)
    nats = docker.exec_python(tickets, NATS_PUBLISH)
    for attempt, answer in nats.items():
        print(f"NATS: {attempt}: {answer!r}", flush=True)
    if any(result.startswith("answered") for result in reached.values()):
        raise Failed("the client container reached a datastore")
    if not own["tickets-mongo:27017"].startswith("answered"):
        raise Failed("tickets does not reach its own MongoDB: the check proves nothing")
    if "Authorization Violation" not in nats["no credentials, ticket.updated"]:
        raise Failed("NATS let a client without credentials in")
    if "Permissions Violation for Publish" not in nats["tickets, order.created"]:
        raise Failed("NATS let tickets publish order.created")
    if "-ERR" in nats["tickets, $JS.API.INFO"]:
        raise Failed("NATS refused tickets a subject it may publish: the check proves nothing")


class Load(threading.Thread):
    """GETs through the ingress, one after another, until stopped; counts the failures."""

    def __init__(self, client: Client, paths: list[str]) -> None:
        super().__init__(daemon=True)
        self.client, self.paths = client, paths
        self.running = True
        self.total = 0
        self.failures: list[str] = []

    def run(self) -> None:
        """Cycle through the paths; any answer but 200 is a failure."""
        while self.running:
            path = self.paths[self.total % len(self.paths)]
            self.total += 1
            try:
                status, data = self.client.call("GET", path)
                if status != 200:
                    self.failures.append(f"{path}: {status} {data}")
            except (OSError, http.client.HTTPException) as error:
                self.failures.append(f"{path}: {error!r}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop and wait for the request in flight."""
        self.running = False
        self.join(30)


def roll(docker: Docker, service: str, image: str, load: Load) -> None:
    """`docker service update --image` to a new tag of the same image under load; wait until
    Swarm calls the update completed (after its monitor period), not rolled back."""
    new = f"{image}-roll"
    docker("tag", image, new)
    load.start()
    started = time.monotonic()
    docker("service", "update", "--detach=false", "--no-resolve-image", "--image", new, service)
    status = "{{.UpdateStatus.State}} {{.Spec.TaskTemplate.ContainerSpec.Image}}"

    def finished() -> str:
        state = docker("service", "inspect", "-f", status, service, quiet=True)
        return "" if state.startswith("updating") else state

    state = wait_for("update finished", finished, 180)
    load.stop()
    print(
        f"ROLL: {service} {image} -> {new}: {state} in {time.monotonic() - started:.0f}s; "
        f"{load.total} requests, {len(load.failures)} failed",
        flush=True,
    )
    for failure in load.failures[:10]:
        log(f"failed: {failure}")
    if load.failures or state != f"completed {new}":
        raise Failed(f"{len(load.failures)} of {load.total} requests failed; update: {state}")


def kill_task(docker: Docker, service: str, load: Load) -> None:
    """`docker kill` one task's container; wait until a new task runs healthy in its place."""
    victim = docker.containers(service)[0]
    task = docker(
        "inspect", "-f", '{{index .Config.Labels "com.docker.swarm.task.id"}}', victim, quiet=True
    )
    before = set(
        docker("service", "ps", "-q", "-f", "desired-state=running", service, quiet=True).split()
    )
    load.start()
    started = time.monotonic()
    docker("kill", victim)

    def replaced() -> list[str]:
        tasks = docker("service", "ps", "-q", "-f", "desired-state=running", service, quiet=True)
        new = set(tasks.split()) - before
        healthy = docker(
            "ps",
            "-f",
            f"label=com.docker.swarm.service.name={service}",
            "-f",
            "health=healthy",
            "-q",
            quiet=True,
        )
        return list(new) if new and len(healthy.split()) == len(before) else []

    (new,) = wait_for("a new task", replaced, 180)
    load.stop()
    print(
        f"KILL: {service} task {task[:12]} (container {victim[:12]}) killed; Swarm replaced "
        f"it with task {new[:12]}, healthy after {time.monotonic() - started:.0f}s; "
        f"{load.total} requests meanwhile, {len(load.failures)} failed",
        flush=True,
    )
    for failure in load.failures[:10]:
        log(f"failed (not judged): {failure}")


def diagnose(docker: Docker, stack_name: str) -> None:
    """What is not running, and the last lines of its logs."""
    with contextlib.suppress(Failed):
        tasks = docker(
            "stack",
            "ps",
            stack_name,
            "--no-trunc",
            "--format",
            "{{.Name}} {{.CurrentState}} {{.Error}}",
            quiet=True,
        )
        bad = [line for line in tasks.splitlines() if "Running" not in line]
        log("tasks not running:\n    " + "\n    ".join(bad[-20:]))
        for name in sorted({line.split(".")[0] for line in bad}):
            log(
                f"{name} logs:\n"
                + docker("service", "logs", "--tail", "15", name, check=False, quiet=True)
            )


def cleanup(docker: Docker, stack_name: str) -> None:
    """Remove the stack and its volumes, leave the swarm, stop dockerd."""
    try:
        if docker.proc and docker.proc.poll() is None:
            docker("stack", "rm", stack_name, check=False)
            label = f"label=com.docker.stack.namespace={stack_name}"
            with contextlib.suppress(Failed):
                wait_for(
                    "containers gone", lambda: not docker("ps", "-aq", "-f", label, quiet=True), 60
                )
            docker("swarm", "leave", "--force", check=False)
            docker("container", "prune", "-f", check=False)
            docker("volume", "prune", "-f", check=False)
    finally:
        docker.stop()


def main() -> int:
    """Run the steps; 0 if all passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / ".data" / "swarm",
        help="cache and dockerd data-root (default .data/swarm)",
    )
    parser.add_argument("--cold", action="store_true", help="delete --work first")
    parser.add_argument("--stack", default="ticketing", help="stack name (default ticketing)")
    parser.add_argument("--roll", default="orders", help="service to roll (default orders)")
    parser.add_argument(
        "--kill", default="tickets", help="service whose task is killed (default tickets)"
    )
    opts = parser.parse_args()
    missing = [tool for tool in ("dockerd", DOCKER, "mmdebstrap") if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        needs = ", ".join(["root", *missing])
        print(f"smoke.py needs {needs} (Debian: apt-get install docker.io mmdebstrap)")
        return 2
    work = opts.work.resolve()
    if opts.cold and work.exists():
        with step(f"0. --cold: delete {work}"):
            shutil.rmtree(work)
    (work / "cache").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TAG", "smoke")  # for docker stack deploy too
    stack = load_stack(dict(os.environ))
    docker = Docker(work)
    ok = False
    try:
        with step("1. private dockerd, swarm init"):
            docker.start()
            if docker("info", "-f", "{{.Swarm.LocalNodeState}}") != "inactive":
                docker("swarm", "leave", "--force")
            docker("swarm", "init", "--advertise-addr", "127.0.0.1")
            constraints = [
                c
                for s in stack["services"].values()
                for c in s.get("deploy", {}).get("placement", {}).get("constraints", [])
            ]
            for label in sorted(
                {
                    m.group(1) + "=" + m.group(2)
                    for c in constraints
                    if (m := re.match(r"node\.labels\.(\S+) == (\S+)$", c))
                }
            ):
                docker(
                    "node",
                    "update",
                    "--label-add",
                    label,
                    docker("info", "-f", "{{.Swarm.NodeID}}"),
                )
        with step("2. images"):
            build_images(docker, stack, work / "cache")
        with step("3. secrets, stack deploy"):
            create_secrets(docker, stack)
            files = [*STACK_FILES, write_override(stack, work)]
            docker(
                "stack",
                "deploy",
                "--resolve-image",
                "never",
                "--prune",
                *(f"--compose-file={f}" for f in files),
                opts.stack,
            )
        with step("4. every service running, healthy"):
            wait_healthy(docker, opts.stack, list(stack["services"]))
            wait_for("GET / through the ingress", lambda: Client(80).call("GET", "/")[0] == 200, 60)
        with step("5. purchase through the ingress"):
            buyer, order_id = purchase(80)
        with step("6. network isolation, NATS permissions"):
            isolation(docker, opts.stack)
        with step(f"7. roll {opts.roll} under load"):
            paths = {
                "orders": [f"/api/orders/{order_id}", "/api/orders"],
                "tickets": ["/api/tickets"],
                "client": ["/"],
            }
            load = Load(buyer, paths.get(opts.roll, ["/api/users/currentuser"]))
            roll(docker, f"{opts.stack}_{opts.roll}", stack["services"][opts.roll]["image"], load)
        with step(f"8. kill a {opts.kill} task"):
            load = Load(buyer, paths.get(opts.kill, ["/api/users/currentuser"]))
            kill_task(docker, f"{opts.stack}_{opts.kill}", load)
        ok = True
    except Failed as error:
        log(f"FAILED: {error}")
        diagnose(docker, opts.stack)
    finally:
        with step("9. clean up"):
            cleanup(docker, opts.stack)
        print(
            "\n--- summary\n" + "\n".join(SUMMARY) + f"\n     {time.monotonic() - T0:6.1f}s  total"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
