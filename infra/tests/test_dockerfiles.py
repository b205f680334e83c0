"""The images: one Dockerfile, at the root, builds them all; build arguments choose the service.
It passes hadolint, pins its base image and uv, and with the arguments the stack file gives each
image builds a small non-root image from uv.lock with the workspace packages that image runs;
.dockerignore keeps the sources and drops the rest."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .deploy import (
    DOCKERFILE,
    IMAGES,
    ROOT,
    Doc,
    build_args,
    run,
    stack_env,
    stack_services,
    tool,
)

# An exact version of the official image (no floating 3.11-slim, no distribution-less tag).
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-(bookworm|trixie)")
PINNED_UV = re.compile(r"(?:^|\s)uv==\d+\.\d+\.\d+(?:\s|$)")
SERVICE_ARGS = ("SOURCE", "PACKAGE", "MODULE")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::?-([^}]*))?\}|(\w+))")


def expand(text: str, env: dict[str, str]) -> str:
    """$NAME, ${NAME} and ${NAME:-default} as Docker (and the shell) substitute them."""

    def value(match: re.Match[str]) -> str:
        found = env.get(match.group(1) or match.group(3), "")
        return found or (match.group(2) or "")

    return _VARIABLE.sub(value, text)


@dataclass
class Stage:
    name: str
    base: str
    # Instructions with the build-time variables substituted, where the build substitutes them:
    # by Docker in FROM, COPY, ENV, LABEL, EXPOSE, USER, WORKDIR; by the shell in RUN.
    steps: list[tuple[str, str]] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)  # ARG values in this stage
    env: dict[str, str] = field(default_factory=dict)  # ENV values: what the container has
    raw: list[tuple[str, str]] = field(default_factory=list)  # as written (CMD, HEALTHCHECK)


def stages(arguments: dict[str, str]) -> list[Stage]:
    """The Dockerfile as `docker build --build-arg NAME=value ...` reads it. ARG scoping as
    Docker's: an ARG before the first FROM is seen by FROM lines only, unless a stage declares
    it again; a stage sees only the ARGs it declares."""
    result: list[Stage] = []
    globals_: dict[str, str] = {}
    for word, rest in instructions(DOCKERFILE):
        if word == "ARG":
            name, has_default, default = rest.partition("=")
            value = arguments.get(name, default if has_default else None)
            if not result:
                globals_[name] = value if value is not None else ""
            else:
                scope = result[-1]
                if value is None:
                    value = globals_.get(name, "")
                scope.args[name] = expand(value, {**scope.args, **scope.env})
            continue
        if word == "FROM":
            image, _, alias = expand(rest, globals_).partition(" AS ")
            parent = next((s for s in result if s.name == image.strip()), None)
            env = dict(parent.env) if parent else {}
            result.append(Stage(alias.strip(), image.strip(), env=env))
            continue
        stage = result[-1]
        stage.raw.append((word, rest))
        variables = {**stage.args, **stage.env}
        if word == "ENV":
            pairs = [item.partition("=") for item in shlex.split(rest)]
            assert all(sep for _, sep, _ in pairs), f"ENV NAME=value: {rest}"
            stage.env.update({k: expand(v, variables) for k, _, v in pairs})
        if word in {"RUN", "COPY", "ADD", "ENV", "LABEL", "EXPOSE", "USER", "WORKDIR"}:
            rest = expand(rest, variables)
        stage.steps.append((word, rest))
    return result


def image(service: str) -> tuple[Stage, Stage]:
    """(builder, runtime) of the image of `service`, built with the stack file's arguments."""
    built = stages(build_args(service))
    assert len(built) >= 2, "multi-stage"
    return built[0], built[-1]


def runs(stage: Stage, instruction: str) -> list[str]:
    """The command of CMD or HEALTHCHECK as the container runs it: exec form as written, or
    `sh -c "exec ..."` with the container's environment (ENV, not ARG) substituted."""
    found = [rest for word, rest in stage.raw if word == instruction]
    assert found, f"no {instruction}"
    text = found[-1]
    if instruction == "HEALTHCHECK":
        text = text[text.index("CMD ") + len("CMD ") :]
    command: list[str] = json.loads(text)
    if command[:2] != ["sh", "-c"]:
        return command
    words = shlex.split(expand(command[2], stage.env))
    assert words[0] == "exec", "the shell must hand PID 1 (and SIGTERM) to the program"
    return words[1:]


def image_port(service: str) -> str:
    """Where the service listens in the stack, which its image must expose and check."""
    return stack_env(service)["PORT"]


def test_one_dockerfile_builds_every_image() -> None:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "node_modules"]
        found += [
            Path(folder, f).relative_to(ROOT).as_posix()
            for f in files
            if f == "Dockerfile" or f.endswith(".Dockerfile") or f.startswith("Dockerfile.")
        ]
    assert found == ["Dockerfile"]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", str(ROOT / ".venv" / "bin" / "hadolint"))
    result = run(hadolint, "--no-color", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = tool("hadolint", str(ROOT / ".venv" / "bin" / "hadolint"))
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install uv\n")
    assert run(hadolint, "--no-color", str(bad)).returncode != 0


@pytest.mark.parametrize("service", list(IMAGES))
def test_stack_file_builds_each_image_from_the_dockerfile_with_its_arguments(service: str) -> None:
    directory, package, module = IMAGES[service]
    build: Doc = stack_services()[service]["build"]
    assert Path(build["context"]) in {Path("."), ROOT}, "the build context is the repository root"
    assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
    arguments = build_args(service)
    assert {k: arguments.get(k) for k in SERVICE_ARGS} == {
        "SOURCE": directory,
        "PACKAGE": package,
        "MODULE": module,
    }
    declared = {rest.partition("=")[0] for word, rest in instructions(DOCKERFILE) if word == "ARG"}
    assert set(arguments) <= declared, f"unknown build arguments {set(arguments) - declared}"
    _, runtime = image(service)
    assert runtime.env["PORT"] == image_port(service), "PORT: the port it listens on in the stack"


@pytest.mark.parametrize("service", list(IMAGES))
def test_dockerfile_builds_a_small_non_root_image_from_the_lock(service: str) -> None:
    directory, package, module = IMAGES[service]
    builder, runtime = image(service)
    bases = {s.base for s in stages(build_args(service))}
    assert len(bases) == 1 and PINNED_BASE.fullmatch(next(iter(bases))), bases
    uv = [a for w, a in builder.steps if w == "RUN" and re.search(r"pip install\b.*\buv\b", a)]
    assert uv and all(PINNED_UV.search(a) for a in uv), uv
    syncs = [shlex.split(a) for w, a in builder.steps if w == "RUN" and "uv sync" in a]
    assert syncs and all(s[s.index("--package") + 1] == package for s in syncs), syncs
    assert all("--frozen" in s and "--no-dev" in s for s in syncs)
    assert "--no-editable" in syncs[-1], "the runtime stage gets the packages, not links"
    # Third-party dependencies in a layer of their own, before the sources are copied.
    first_sync = next(i for i, (w, a) in enumerate(builder.steps) if "uv sync" in a)
    assert "--no-install-workspace" in syncs[0]
    assert not any(
        w == "COPY" and a.split()[0].rstrip("/") in {"common", directory}
        for w, a in builder.steps[:first_sync]
    )
    users = [a for w, a in runtime.steps if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert not any(w in {"COPY", "ADD"} and "--from" not in a for w, a in runtime.steps), (
        "the runtime stage takes only the built venv"
    )
    health = runs(runtime, "HEALTHCHECK")
    assert "/healthz" in " ".join(health) and "urllib" in " ".join(health)
    port = image_port(service)
    assert f":{port}/" in " ".join(health) or (
        "os.environ['PORT']" in " ".join(health) and runtime.env["PORT"] == port
    ), "the healthcheck asks the port the service listens on"
    assert runs(runtime, "CMD") == ["python", "-m", module]
    assert [a for w, a in runtime.steps if w == "EXPOSE"] == [port]
    labels = " ".join(a for w, a in runtime.steps if w == "LABEL")
    assert f'org.opencontainers.image.title="{package}"' in labels
    for stage in (builder, runtime):
        for word, args in stage.raw:
            if word in {"ENV", "ARG"}:
                assert not re.search(r"(JWT_KEY|STRIPE_KEY|PASSWORD|SECRET|TOKEN)\b", args), args
    copied = {a.split()[0].rstrip("/") for w, a in builder.steps if w == "COPY"}
    assert directory in copied


def test_dockerfile_refuses_to_build_without_the_service_arguments() -> None:
    """Without SOURCE, `COPY ${SOURCE}/` would copy the whole context: the builder stops first."""
    arguments = build_args("auth")
    for missing in [None, *SERVICE_ARGS]:
        given = {k: v for k, v in arguments.items() if k != missing}
        builder = stages(given)[0]
        guards = [a for w, a in builder.raw if w == "RUN" and "test -n" in a]
        first_copy = next(i for i, (w, a) in enumerate(builder.raw) if "${SOURCE}" in a)
        assert guards and builder.raw.index(("RUN", guards[0])) < first_copy
        result = subprocess.run(
            ["sh", "-c", guards[0]],
            env={"PATH": os.environ["PATH"], **builder.args},
            capture_output=True,
            check=False,
        )
        assert (result.returncode == 0) == (missing is None), missing


def workspace_lock() -> dict[str, Doc]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p for p in lock["package"]}


def workspace_dirs(package: str, lock: dict[str, Doc]) -> set[str]:
    """The directories of `package` and of every workspace member it depends on."""
    entry = lock[package]
    source = entry.get("source", {})
    if "editable" not in source and "directory" not in source:
        return set()
    found = {source.get("editable") or source["directory"]}
    for dep in entry.get("dependencies", []):
        found |= workspace_dirs(dep["name"], lock)
    return found


@pytest.mark.parametrize("service", list(IMAGES))
def test_dockerfile_copies_every_workspace_package_it_installs(service: str) -> None:
    directory, package, module = IMAGES[service]
    pyproject = ROOT / directory / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip(f"{directory}/ has no package yet")
    project = tomllib.loads(pyproject.read_text())
    assert project["project"]["name"] == package
    shipped = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert module in [Path(p).name for p in shipped], f"the wheel must ship {module}"
    assert (ROOT / directory / module / "__main__.py").exists(), f"python -m {module}"
    lock = workspace_lock()
    assert package in lock, f"{package} is not in uv.lock: add it to the workspace and lock"
    builder, _ = image(service)
    copied = {
        a.split()[0].rstrip("/") for w, a in builder.steps if w == "COPY" and "--from" not in a
    }
    assert workspace_dirs(package, lock) <= copied


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").rstrip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", glob):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        patterns.append((negate, re.compile(regex + "(?:/.*)?$")))
    return patterns


def ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern decides."""
    verdict = False
    for negate, pattern in dockerignore_patterns():
        if pattern.match(path):
            verdict = not negate
    return verdict


def test_dockerignore_keeps_sources_and_drops_the_rest() -> None:
    for kept in (
        "pyproject.toml",
        "uv.lock",
        "common/pyproject.toml",
        "common/ticketing_common/__init__.py",
        "auth/ticketing_auth/__main__.py",
        "client/ticketing_client/templates/base.html",
        "infra/fakestripe/fakestripe/__main__.py",
    ):
        assert not ignored(kept), kept
    for dropped in (
        ".venv/bin/python",
        ".uv/bin/uv",
        ".data/mongo/x",
        ".git/HEAD",
        "auth/tests/test_signup.py",
        "infra/tests/test_deploy.py",
        "common/ticketing_common/__pycache__/x.pyc",
        ".mypy_cache/x",
        "bench/run.py",
        "screenshots/home.png",
        ".env",
        "auth/.env",
    ):
        assert ignored(dropped), dropped
