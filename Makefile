# `make up` and `make test` set up whatever is missing on a Debian/Ubuntu host
# (as root), then run. Every step is idempotent and quick when nothing is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KREL := $(shell uname -r)
BCC_DIR := /usr/lib/python3/dist-packages/bcc
STAMP := $(VENV)/.installed

.PHONY: up test lint typecheck bench-exec bench-files bench-tree bpftrace setup system venv clean

up: setup
	$(VENV)/bin/snoopbus up

# All three must pass; each runs whatever the others found, so one run reports all.
test: setup
	@status=0; \
	$(PY) -m pytest -q -p no:cacheprovider || status=$$?; \
	$(VENV)/bin/ruff check . || status=$$((status ? status : 1)); \
	$(PY) -m tests.typecheck || status=$$((status ? status : 1)); \
	exit $$status

lint: setup
	$(VENV)/bin/ruff check .

# mypy on the shipped package, as pyproject.toml's package-dir maps it (tests/typecheck.py).
typecheck: setup
	$(PY) -m tests.typecheck

bench-exec: setup
	$(PY) -m tests.bench.exec_storm

# Debian's bpftrace, for the benches' third column (installed here only).
bpftrace:
	@command -v bpftrace >/dev/null || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends bpftrace; }

# The file-operation load with and without the collector, beside a bpftrace
# one-liner printing the same operations.
bench-files: setup bpftrace
	$(PY) -m tests.bench.file_ops --seconds 5 --rounds 3

# Real work: tar -x then rm -rf of a 38k-entry tree, bare, watched, beside bpftrace.
bench-tree: setup bpftrace
	$(PY) -m tests.bench.tree_ops --rounds 3

setup: system venv

# BCC from Debian (bpftool too: the tests check BTF offsets against it), and
# kernel headers BCC can compile with. Offsets come from BTF,
# so headers of another kernel version are fine (see DESIGN.md).
system:
	@if [ ! -f $(BCC_DIR)/__init__.py ] || [ ! -e /usr/share/doc/libbpf1 ] || ! command -v bpftool >/dev/null; then \
	  echo "setup: installing BCC (python3-bpfcc) and bpftool from Debian"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-bpfcc bpfcc-tools libbpf1 bpftool; \
	fi
	@if [ ! -e /sys/kernel/kheaders.tar.xz ] && [ ! -d /lib/modules/$(KREL)/build/include ]; then \
	  if ! ls -d /usr/src/linux-headers-*-common >/dev/null 2>&1; then \
	    echo "setup: installing kernel headers for BCC"; \
	    apt-get update -q; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-$(KREL) \
	      || DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-cloud-amd64 \
	      || DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-amd64; \
	  fi; \
	  if [ ! -d /lib/modules/$(KREL)/build/include ]; then \
	    arch=$$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1); \
	    common=$$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1); \
	    [ -n "$$arch" ] && [ -n "$$common" ] || { echo "setup: no kernel headers found under /usr/src" >&2; exit 1; }; \
	    echo "setup: linking $$arch as /lib/modules/$(KREL)/build"; \
	    mkdir -p /lib/modules/$(KREL); \
	    ln -sfn $$arch /lib/modules/$(KREL)/build; \
	    ln -sfn $$common /lib/modules/$(KREL)/source; \
	  fi; \
	fi

	@# Test tools from Debian: Docker's compose client validates compose.yaml (no engine
	@# needed), tmux drives `snoopbus up` in a real terminal, the syslog sink tests
	@# start their own rsyslogd.
	@# rsyslog-gnutls is rsyslog's TLS driver (lmnsd_gtls), for the syslog+tls tests.
	@if ! command -v docker-compose >/dev/null || ! command -v tmux >/dev/null || [ ! -x /usr/sbin/rsyslogd ] \
	    || ! dpkg -s rsyslog-gnutls >/dev/null 2>&1; then \
	  echo "setup: installing docker-compose, tmux and rsyslog with TLS (Debian) for the deployment, terminal and syslog tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose tmux rsyslog rsyslog-gnutls; \
	fi
	@# gcc and a static libc build the evasion tests' programs (tests/evasion: a static
	@# -no-pie binary making ia32 system calls); setpriv runs them as nobody.
	@if ! command -v gcc >/dev/null || [ ! -f /usr/lib/x86_64-linux-gnu/libc.a ] \
	    || ! command -v setpriv >/dev/null; then \
	  echo "setup: installing gcc, libc6-dev and util-linux (setpriv) for the evasion tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev util-linux; \
	fi

	@# liburing (Debian) builds the io_uring test program (tests/uring/uring_ops.c).
	@if [ ! -f /usr/include/liburing.h ] || ! command -v gcc >/dev/null; then \
	  echo "setup: installing liburing-dev and gcc (Debian) for the io_uring tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends liburing-dev gcc libc6-dev; \
	fi

	@# strace (Debian) records the real workload the collector is compared against
	@# (tests/collector/test_workload_strace.py).
	@if ! command -v strace >/dev/null; then \
	  echo "setup: installing strace (Debian) for the workload comparison test"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends strace; \
	fi

	@# promtool, from Debian's prometheus package, checks and unit-tests the shipped
	@# alerting rules (tests/app/test_observability.py). Debian also starts a Prometheus
	@# server listening on :9090; only the tool is wanted, so that service is stopped
	@# and disabled (`systemctl enable --now prometheus` to use it).
	@if ! command -v promtool >/dev/null; then \
	  echo "setup: installing prometheus (Debian) for promtool, to check the alerting rules"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus && \
	  { systemctl disable --now prometheus >/dev/null 2>&1 || true; }; \
	fi

venv: $(STAMP)

# setup.py builds the native modules (collector/fastbuild.c, consumers/archive/fastcols.c,
# consumers/fastpair.c; the first two include proto/native_buf.h; ~10 s with gcc);
# without a compiler the install goes on without it (the Python path).
$(STAMP): pyproject.toml setup.py collector/fastbuild.c consumers/archive/fastcols.c consumers/fastpair.c proto/native_buf.h
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,test]'
	@# BCC's Python module is pure Python over libbcc.so: expose it to the venv.
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  [ -e $$site/bcc ] || ln -s $(BCC_DIR) $$site/bcc
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
