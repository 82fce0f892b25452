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
# read by banger doctor and .ci/run. Here: the rows banger needs at run time.
TOOLS := crates/hostcheck/tools.txt
DEBS := $(shell awk '!/^\#/ && NF && $$5 != "test" {print $$2}' $(TOOLS) | sort -u)
DEB_CMDS := $(shell awk '!/^\#/ && NF && $$5 != "test" && $$1 != "-" {print $$1}' $(TOOLS))

.PHONY: run test deps build build-debug agent check fmt clippy e2e bench clean fuzz-smoke release

## make run: install what is missing, build, then boot the default image and run uname in it.
run: deps build
	./target/release/banger vm run -- uname -a

## make test: every test: unit, root integration (in private network namespaces), end-to-end.
test: deps build-debug
	BANGER_UPDATE_IT=1 $(CARGO) test --workspace
	BANGER_E2E=1 BANGER_AGENT=$(CURDIR)/$(AGENT_INSTALLED) \
		$(CARGO) test -p banger-cli --test e2e -- --nocapture --test-threads=1

deps:
	@missing=""; for c in $(DEB_CMDS); do command -v $$c >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v $$c >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing: $(DEBS)"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(DEBS); \
		else \
			echo "missing tools; run: sudo apt-get install $(DEBS)"; exit 1; \
		fi; \
	fi

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

bench: build
	./scripts/bench.sh

## make fuzz-smoke: every cargo-fuzz target for a few seconds (stable toolchain; docs/fuzzing.md).
fuzz-smoke:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	./scripts/fuzz-smoke $(FUZZ_SECONDS)

clean:
	$(CARGO) clean
