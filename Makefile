# banger: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
TARGET := x86_64-unknown-linux-gnu
# The guest agent is also the initrd's init, where no libc exists: link it statically.
AGENT_FLAGS := --profile guest --target $(TARGET) \
	--config 'target.$(TARGET).rustflags=["-C","target-feature=+crt-static"]'
AGENT_OUT := target/$(TARGET)/guest/banger-agent
# Where banger looks for the agent: ../lib/banger/banger-agent from its binaries, the
# same rule as the system install (/usr/local/bin → /usr/local/lib/banger). Cargo
# never writes target/lib, so a plain `cargo build` cannot replace the static agent.
AGENT_INSTALLED := target/lib/banger/banger-agent
# Host tools and their Debian packages: one table, crates/hostcheck/tools.txt, also
# read by banger doctor and .ci/run. Here: the rows banger needs at run time, and
# (for make bench) the rows of the tools the benchmark measures banger against.
TOOLS := crates/hostcheck/tools.txt
RUN_ROWS := $$5 == "required" || $$5 == "optional"
DEBS := $(shell awk '!/^\#/ && NF && ($(RUN_ROWS)) {print $$2}' $(TOOLS) | sort -u)
DEB_CMDS := $(shell awk '!/^\#/ && NF && ($(RUN_ROWS)) && $$1 != "-" {print $$1}' $(TOOLS))
# The bench also uses two of the test rows: python3 (the script) and docker-registry.
BENCH_ROWS := $$5 == "bench" || $$1 == "python3" || $$1 == "docker-registry"
BENCH_DEBS := $(shell awk '!/^\#/ && NF && ($(BENCH_ROWS)) {print $$2}' $(TOOLS) | sort -u)
BENCH_CMDS := $(shell awk '!/^\#/ && NF && ($(BENCH_ROWS)) && $$1 != "-" {print $$1}' $(TOOLS))

.PHONY: run test deps bench-deps build build-debug agent check fmt clippy e2e bench clean fuzz-smoke release

## make run: install what is missing, build, then boot the default image and run uname in it.
run: deps build
	./target/release/banger vm run -- uname -a

## make test: every test: unit, root integration (in private network namespaces), end-to-end.
test: deps build-debug
	BANGER_UPDATE_IT=1 $(CARGO) test --workspace
	BANGER_E2E=1 BANGER_AGENT=$(CURDIR)/$(AGENT_INSTALLED) \
		$(CARGO) test -p banger-cli --test e2e -- --nocapture --test-threads=1

# Install what is missing from $(1) (commands) with $(2) (Debian packages): as root
# with apt-get, otherwise print the command to run.
define install_missing
	@missing=""; for c in $(1); do command -v $$c >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v $$c >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing: $(2)"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(2); \
		else \
			echo "missing tools; run: sudo apt-get install $(2)"; exit 1; \
		fi; \
	fi
endef

deps:
	$(call install_missing,$(DEB_CMDS),$(DEBS))

bench-deps:
	$(call install_missing,$(BENCH_CMDS),$(BENCH_DEBS))

agent:
	$(CARGO) build -p banger-agent $(AGENT_FLAGS)
	install -D -m 0755 $(AGENT_OUT) $(AGENT_INSTALLED)

build: agent
	$(CARGO) build --release -p banger-cli -p banger-daemon

# The default members: everything but the agent, which `agent` builds static.
build-debug: agent
	$(CARGO) build

## make release RELEASE_KEY=/path/key.pem: a signed release in dist/ (docs/releases.md).
RELEASE_KEY ?=
RELEASE_OUT ?= dist
release: agent
	@test -n "$(RELEASE_KEY)" || { echo "set RELEASE_KEY=/path/to/release-key.pem (see docs/releases.md)"; exit 1; }
	$(CARGO) run --release -q -p xtask -- release --key "$(RELEASE_KEY)" --agent $(AGENT_OUT) --out $(RELEASE_OUT) $(RELEASE_FLAGS)

fmt:
	$(CARGO) fmt --all

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## make bench: one table, banger against a stock Debian boot and the by-hand tools
## (root; docs/performance.md). BENCH_FLAGS passes options, e.g. BENCH_FLAGS="--runs 3".
bench: deps bench-deps build
	./scripts/bench $(BENCH_FLAGS)

## make fuzz-smoke: every cargo-fuzz target for a few seconds (stable toolchain; docs/fuzzing.md).
fuzz-smoke:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	./scripts/fuzz-smoke $(FUZZ_SECONDS)

clean:
	$(CARGO) clean
