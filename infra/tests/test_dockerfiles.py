"""The images: every Dockerfile passes hadolint and builds a small non-root image from uv.lock with
the workspace packages it installs; .dockerignore keeps the sources and drops the rest."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from .deploy import IMAGES, ROOT, Doc, run, tool


def dockerfile(service: str) -> Path:
    return ROOT / IMAGES[service][0] / "Dockerfile"


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


@pytest.mark.parametrize("service", list(IMAGES))
def test_dockerfile_passes_hadolint(service: str) -> None:
    hadolint = tool("hadolint", str(ROOT / ".venv" / "bin" / "hadolint"))
    result = run(hadolint, "--no-color", str(dockerfile(service)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = tool("hadolint", str(ROOT / ".venv" / "bin" / "hadolint"))
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install uv\n")
    assert run(hadolint, "--no-color", str(bad)).returncode != 0


@pytest.mark.parametrize("service", list(IMAGES))
def test_dockerfile_builds_a_small_non_root_image_from_the_lock(service: str) -> None:
    directory, package, module = IMAGES[service]
    steps = instructions(dockerfile(service))
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    assert all(f.split()[0] == "python:3.11-slim" for f in froms)
    final = len(steps) - 1 - [w for w, _ in steps][::-1].index("FROM")
    runtime = steps[final:]
    syncs = [a for w, a in steps[:final] if w == "RUN" and "uv sync" in a]
    assert syncs and all(re.search(rf"--package {package}(\s|$)", s) for s in syncs)
    assert all("--frozen" in s and "--no-dev" in s for s in syncs)
    assert "--no-editable" in syncs[-1], "the runtime stage gets the packages, not links"
    users = [a for w, a in runtime if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert not any(w in {"COPY", "ADD"} and "--from" not in a for w, a in runtime), (
        "the runtime stage takes only the built venv"
    )
    health = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and "urllib" in health[0]
    cmd = [a for w, a in runtime if w == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["python", "-m", module]
    assert any(w == "EXPOSE" for w, _ in runtime)
    for word, args in steps:
        if word in {"ENV", "ARG"}:
            assert not re.search(r"(JWT_KEY|STRIPE_KEY|PASSWORD|SECRET|TOKEN)\b", args), args
    copied = {a.split()[0].rstrip("/") for w, a in steps[:final] if w == "COPY"}
    assert directory in copied


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
    steps = instructions(dockerfile(service))
    copied = {a.split()[0].rstrip("/") for w, a in steps if w == "COPY" and "--from" not in a}
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
