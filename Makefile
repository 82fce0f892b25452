# banger: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
TARGET := x86_64-unknown-linux-gnu
# The guest agent is also the initrd's init, where no libc exists: link it statically.
AGENT_FLAGS := --profile guest --target $(TARGET) \
	--config 'target.$(TARGET).rustflags=["-C","target-feature=+crt-static"]'
AGENT_OUT := target/$(TARGET)/guest/banger-agent
# Debian packages banger needs at run time (and to build images and run tests).
DEBS := qemu-system-x86 mmdebstrap e2fsprogs openssh-client nftables iproute2 ca-certificates
DEB_CMDS := qemu-system-x86_64 mmdebstrap mkfs.ext4 debugfs ssh nft ip

.PHONY: run test deps build build-debug agent check fmt clippy e2e bench clean release

## make run: install what is missing, build, then boot the default image and run uname in it.
run: deps build
	./target/release/banger vm run -- uname -a

## make test: every test: unit, root integration (in private network namespaces), end-to-end.
test: deps build-debug
	BANGER_UPDATE_IT=1 $(CARGO) test --workspace
	BANGER_E2E=1 BANGER_AGENT=$(CURDIR)/$(AGENT_OUT) \
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

build: agent
	$(CARGO) build --release -p banger-cli -p banger-daemon
	install -m 0755 $(AGENT_OUT) target/release/banger-agent

build-debug: agent
	$(CARGO) build --workspace
	install -m 0755 $(AGENT_OUT) target/debug/banger-agent

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

clean:
	$(CARGO) clean
