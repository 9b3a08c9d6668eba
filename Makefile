# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint fmt fuzz test-obs test-browser browser install bench clean

# libsrt (SRT ingest, Debian's reference library) comes from apt when missing; without it
# the server says how to install it, or runs with [srt] enabled = false
$(STAMP): pyproject.toml
	@ldconfig -p | grep -q 'libsrt-openssl.so.1.5\|libsrt.so.1.5' || \
	  (command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq libsrt1.5-openssl) || \
	  echo "make: libsrt1.5-openssl is not installed: SRT ingest needs it ([srt] enabled = false to run without)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/rtmp-ingest serve

# the browser tests' and bench_whep's npm packages, pinned (Chromium itself: Debian's,
# installed by .ci/run); mpegts.js plays HTTP-FLV in bench/bench_whep.py, served locally
BROWSER_PKGS  := hls.js@1.7.4 mpegts.js@1.8.2 playwright-core@1.65.1
BROWSER_STAMP := .browser/.installed-$(subst @,-,$(subst $() $(),_,$(BROWSER_PKGS)))
$(BROWSER_STAMP):
	mkdir -p .browser && cd .browser && npm install --silent --no-save --no-audit --no-fund $(BROWSER_PKGS)
	rm -f .browser/.installed-* && touch $@

browser: $(BROWSER_STAMP)

# with npm on the machine the browser test's packages are installed; the test itself runs
# wherever Debian's chromium is (CI installs it) and says why it skips elsewhere
# two workers, a test file each at a time (end-to-end tests mostly wait on real-time
# media; a file's tests share fixed resources such as WHIP's UDP port range)
TEST_WORKERS ?= 2
test: $(STAMP) $(if $(shell command -v npm),$(BROWSER_STAMP))
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# ruff (rules and format) and mypy: strict on the pure layers, checked on the rest
STRICT := rtmp_ingest/rtmp rtmp_ingest/flv rtmp_ingest/bundle $(wildcard rtmp_ingest/auth)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict $(STRICT)
	$(BIN)/mypy rtmp_ingest

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-obs: $(STAMP)
	bash ../shared/realclients/install.sh --no-pyav
	RUN_OBS=1 $(BIN)/python -m pytest -q tests/e2e/test_obs.py

test-browser: $(STAMP) $(BROWSER_STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/python -m pytest -q tests/e2e/test_browser.py

# the benches import tests/ helpers (pyrtmp installs a top-level `tests` package too)
bench: export PYTHONPATH := $(CURDIR)
bench: $(STAMP)
	$(BIN)/python bench/bench_chunks.py
	$(BIN)/python bench/bench_bundle.py
	$(BIN)/python bench/bench_server.py
	$(BIN)/python bench/bench_play.py
	$(BIN)/python bench/bench_hls.py

# the RTMP core and the FLV parser against >= 1 M generated inputs (only protocol errors escape)
fuzz: export PYTHONPATH := $(CURDIR)
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py

clean:
	rm -rf $(VENV) build *.egg-info .browser
