# man8s — build, install, test.
#   make                                  build everything (release)
#   make install [DESTDIR=…] [PREFIX=/usr] lay the package out
#   make test                             (as root) install missing Debian packages (packaging/debian-deps),
#                                         then unit + root + system tiers, install layout, package check

# /usr, not /usr/local: the paths the generated files name are fixed (see docs/HACKING.md, "Install prefix").
PREFIX     ?= /usr
SYSCONFDIR ?= /etc
DESTDIR    ?=
CARGO      ?= cargo
SCDOC      ?= scdoc
BUILD      := build
REL        := target/release
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
INIT_BIN   := target/$(HOST_TRIPLE)/release-init/man8s-init

BINDIR     := $(PREFIX)/bin
LIBEXECDIR := $(PREFIX)/lib/man8s
UNITDIR    := $(PREFIX)/lib/systemd/system
GENDIR     := $(PREFIX)/lib/systemd/system-generators
NETWORKDIR := $(PREFIX)/lib/systemd/network
DATADIR    := $(PREFIX)/share/man8s
MANDIR     := $(PREFIX)/share/man
BASHCOMPDIR := $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  := $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR := $(PREFIX)/share/fish/vendor_completions.d

MAN_SRC    := $(wildcard docs/man/*.scd)
MAN_OUT    := $(patsubst docs/man/%.scd,$(BUILD)/man/%,$(MAN_SRC))

.PHONY: all build init docs install test test-deps test-unit test-root test-system test-install test-package demo bench clean

all: build init docs

build:
	$(CARGO) build --release --locked --workspace --exclude man8s-init

# The init is linked statically (glibc, crt-static) so it runs in any image, even without a libc; getrandom (for
# dhcproto's xids) uses the raw syscall, as a static glibc has no dlsym and /dev may be bare.
init:
	RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_raw\"" $(CARGO) build --locked --profile release-init \
		--target $(HOST_TRIPLE) -p man8s-init

docs: $(MAN_OUT) build
	mkdir -p $(BUILD)/man $(BUILD)/completions
	$(REL)/mbctl generate-docs --man-dir $(BUILD)/man --completions-dir $(BUILD)/completions

$(BUILD)/man/%: docs/man/%.scd
	@mkdir -p $(BUILD)/man
	$(SCDOC) < $< > $@

install: all
	install -Dm755 $(REL)/mbctl                 $(DESTDIR)$(BINDIR)/mbctl
	install -Dm755 $(REL)/man8s-generator       $(DESTDIR)$(GENDIR)/man8s-generator
	install -Dm755 $(REL)/man8s-fetch           $(DESTDIR)$(LIBEXECDIR)/man8s-fetch
	install -Dm755 $(REL)/man8s-bridge          $(DESTDIR)$(LIBEXECDIR)/man8s-bridge
	install -Dm755 $(REL)/man8s-dns             $(DESTDIR)$(LIBEXECDIR)/man8s-dns
	install -Dm755 $(INIT_BIN)                  $(DESTDIR)$(LIBEXECDIR)/man8s-init
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DATADIR)/networkd $(DESTDIR)$(PREFIX)/lib/man8s/machines
	for u in units/*.service units/*.path units/*.target units/*.timer; do [ -e "$$u" ] || continue; \
		sed 's|@LIBEXECDIR@|$(LIBEXECDIR)|g; s|@BINDIR@|$(BINDIR)|g' "$$u" > $(DESTDIR)$(UNITDIR)/$$(basename "$$u"); \
		chmod 644 $(DESTDIR)$(UNITDIR)/$$(basename "$$u"); done
	for f in networkd/*; do [ -e "$$f" ] || continue; install -m644 "$$f" $(DESTDIR)$(DATADIR)/networkd/; done
	for m in $(BUILD)/man/*.[0-9]; do s=$${m##*.}; install -Dm644 "$$m" $(DESTDIR)$(MANDIR)/man$$s/$$(basename "$$m"); done
	install -Dm644 $(BUILD)/completions/mbctl.bash $(DESTDIR)$(BASHCOMPDIR)/mbctl
	install -Dm644 $(BUILD)/completions/_mbctl     $(DESTDIR)$(ZSHCOMPDIR)/_mbctl
	install -Dm644 $(BUILD)/completions/mbctl.fish $(DESTDIR)$(FISHCOMPDIR)/mbctl.fish
	install -d $(DESTDIR)$(SYSCONFDIR)/man8s/machines
	for f in packaging/etc/*; do [ -e "$$f" ] || continue; install -Dm644 "$$f" $(DESTDIR)$(SYSCONFDIR)/man8s/$$(basename "$$f"); done

test: test-deps
	$(MAKE) --no-print-directory test-unit test-root test-system test-install test-package

# As root: apt-get install what the tiers need and is missing (one list: packaging/debian-deps).
test-deps:
	@if [ "$$(id -u)" = 0 ]; then packaging/debian-deps --install test; else packaging/debian-deps --install build; fi

test-unit:
	$(CARGO) nextest run --workspace -E 'not test(/^root_/)' --no-fail-fast

test-root:
	@[ "$$(id -u)" = 0 ] || { echo "test-root: needs root (network and mount namespaces)" >&2; exit 1; }
	$(CARGO) nextest run --workspace -E 'test(/^root_/)' --no-fail-fast

test-system: all
	@[ "$$(id -u)" = 0 ] || { echo "test-system: needs root (boots a systemd test host)" >&2; exit 1; }
	tests/system/run

demo:
	tests/system/demo

# Every path the installed units and the generator's output name exists in the installed tree.
test-install: all
	tests/install-layout

test-package:
	packaging/arch/check

bench: all
	bench/run

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
