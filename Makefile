# vmig: build, test and install.
#   make                      release build of libvmig.so / libvmig.a
#   make demo                 run vmig-sim: a whole live migration on defaults
#   make check                the whole test suite (README's test command)
#   make install PREFIX=/usr  library, header and pkg-config file
#   make header               regenerate the checked-in include/vmig.h
#   make qemu-check           QEMU 7.2 + qemu-patches/7.2: build, migration-test,
#                             interop with Debian's stock QEMU (docs/qemu.md)
#   make qemu-bench           stock versus patched QEMU on one guest workload
#                             (7.2 and 10.0: reaper and throttle on an SMP guest)
#   make qemu-check-10.0      QEMU 10.0 + qemu-patches/10.0 only (docs/qemu10.md)
#   make qemu-check-10.0-full the same with the whole 10.0 migration-test suite

CARGO     ?= cargo
PREFIX    ?= /usr/local
LIBDIR    ?= $(PREFIX)/lib
INCLUDEDIR?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
SOMAJOR   := 0
# Cargo's output directory: CARGO_TARGET_DIR when set (packaging
# environments set it), else target/. Exported so cargo builds where
# install looks, however it was given (environment or make command line).
ifneq ($(CARGO_TARGET_DIR),)
export CARGO_TARGET_DIR
endif
RELDIR    := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)/release

.PHONY: all release demo header check c-tests install uninstall clean qemu-check qemu-bench \
	qemu-check-10.0 qemu-check-10.0-full

all: release

release:
	$(CARGO) build --release --lib

# README's first set-up command: a whole precopy live migration in-process
# (sim/, docs/sim.md). Pass options with SIM_ARGS, e.g. SIM_ARGS=--compare.
demo:
	$(CARGO) run --release -p vmig-sim -- $(SIM_ARGS)

header:
	VMIG_UPDATE_HEADER=1 $(CARGO) build --lib

# The README test command. scripts/check.sh runs every layer in order and
# says which one failed.
check:
	scripts/check.sh

# Needs root (apt-get); the 7.2 series (20 min on 2 idle cores, up to 45
# busy; docs/qemu.md). The 10.0 series has its own target below, not run
# by CI's qemu-check: it needs more time than .ci/run has left (measured
# in docs/qemu10.md, "Time").
qemu-check:
	qemu-patches/check.sh

qemu-check-10.0:
	qemu-patches/check-10.0.sh

# The whole 10.0 migration-test suite (55 cases), too long for .ci/run.
qemu-check-10.0-full:
	QEMU10_FULL=1 qemu-patches/check-10.0.sh

# Stock versus patched QEMU (qemu-patches/bench.py, bench-smp.py), 7.2 then 10.0.
qemu-bench:
	qemu-patches/check.sh --bench
	qemu-patches/check-10.0.sh --bench

c-tests: release
	scripts/c-tests.sh

install: release
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(RELDIR)/libvmig.so $(DESTDIR)$(LIBDIR)/libvmig.so.$(VERSION)
	ln -sf libvmig.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libvmig.so.$(SOMAJOR)
	ln -sf libvmig.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libvmig.so
	install -m 0644 $(RELDIR)/libvmig.a $(DESTDIR)$(LIBDIR)/libvmig.a
	install -m 0644 include/vmig.h $(DESTDIR)$(INCLUDEDIR)/vmig.h
	install -m 0644 include/vmig_ring_inline.h $(DESTDIR)$(INCLUDEDIR)/vmig_ring_inline.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    vmig.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/vmig.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libvmig.so* $(DESTDIR)$(LIBDIR)/libvmig.a \
	      $(DESTDIR)$(INCLUDEDIR)/vmig.h $(DESTDIR)$(INCLUDEDIR)/vmig_ring_inline.h \
	      $(DESTDIR)$(PKGCONFIGDIR)/vmig.pc

clean:
	$(CARGO) clean
	rm -rf c-tests/build
