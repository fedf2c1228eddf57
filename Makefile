# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the tests use: broker, RTSP server, ffmpeg, promtool, headless Chromium (the status page).
APT_PACKAGES := mosquitto mosquitto-clients rtsp-server-perl ffmpeg prometheus chromium
APT_COMMANDS := mosquitto mosquitto_sub ffmpeg promtool chromium

.PHONY: install deps test demo lint clean bench soak

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@# torch from this machine's local wheel on x86_64 (a CUDA build that also runs on the CPU).
	if [ "$$(uname -m)" = x86_64 ]; then $(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1; fi
	$(PY) -m pip install --quiet -e '.[train,dev,openvino,flow]'
	touch $(STAMP)

deps:
	@missing=0; for c in $(APT_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	dpkg -s rtsp-server-perl >/dev/null 2>&1 || missing=1; \
	if [ $$missing = 1 ]; then \
		echo "installing Debian packages: $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

test: install deps lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: install
	$(PY) -m agent demo

# Format, lint, types (mypy's settings are in pyproject.toml: agent/ and export/) and the one-way import contracts.
lint: install
	$(VENV)/bin/ruff format --check agent export train tests bench
	$(VENV)/bin/ruff check agent export train tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .cache

bench: install deps
	$(PY) -m bench

# The reliability soak for 10 minutes (CI runs the same test for 60 s), then docs/RELIABILITY.md from the results.
soak: install deps
	ACTIONSTREAM_SOAK_S=600 $(PY) -m pytest -q -m soak tests/reliability $(PYTEST_ARGS)
	$(PY) -m tests.reliability.report
