# Two commands: `make run` starts the whole system, `make test` runs every test.
# Both bootstrap first: a private uv in .uv/, then every package into .venv/ from uv.lock.

UV := .uv/bin/uv
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
PYTHON ?= python3
PACKAGES := $(wildcard */ticketing_*) infra/devstack/devstack infra/fakestripe/fakestripe \
	nats-test/nats_test

.PHONY: bootstrap run test test-fast faults lint bench clean

bootstrap: .venv/.installed

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet --disable-pip-version-check 'uv>=0.9,<1'

.venv/.installed: $(UV) uv.lock pyproject.toml $(wildcard */pyproject.toml infra/*/pyproject.toml)
	$(UV) sync --frozen --all-packages --all-extras
	touch $@

run: bootstrap
	.venv/bin/ticketing up

test: bootstrap
	.venv/bin/pytest

# The unit lane: pure decisions and contracts, no server started.
test-fast: bootstrap
	.venv/bin/pytest -p no:cacheprovider $(wildcard */tests/unit)

# The fault suite: purchases through the ingress while every part is killed in turn; prints a
# row per fault and fails on any broken invariant (tests/faults).
faults: bootstrap
	.venv/bin/pytest -p no:cacheprovider -s tests/faults

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy $(wildcard $(PACKAGES))

bench: bootstrap
	for script in bench/*.py; do .venv/bin/python $$script || exit 1; done

clean:
	rm -rf .venv .uv .data
