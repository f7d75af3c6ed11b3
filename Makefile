# mptcplab: `make demo` runs the built-in demo, `make test` the whole test suite.
# Both install what is missing first (Debian/Ubuntu, as root).

PYTHON ?= python3
VENV   := .venv
# iproute2: ip/tc for users and the topology benchmark; kmod, procps: doctor and nstat;
# python3-venv: the virtualenv; git: the commit recorded with each result.
# postgresql: the store tests start a throwaway PostgreSQL cluster of their own.
DEB_PACKAGES := iproute2 procps kmod git python3 python3-venv python3-dev gcc ethtool postgresql
# other kernels (run --kernel, matrix): QEMU, busybox for the guest's init, apt + dpkg-deb (in every Debian)
# fetch and unpack Debian kernels, debian-archive-keyring verifies what they download, kmod's depmod indexes
# their modules
DEB_PACKAGES += qemu-system-x86 busybox-static debian-archive-keyring
# virtiofsd: part of QEMU's packages up to bookworm, its own package from trixie on; installed when the
# distribution has a package of that name and no virtiofsd is there yet (see deb-packages)
VIRTIOFSD_BINARIES := /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd
# the exact Python packages (pip constraints); `make lock` updates it on purpose
LOCK := requirements.lock
# the report's browser tests (tests/test_report.py): headless Chromium driven by Selenium through chromedriver
DEB_PACKAGES += chromium chromium-driver
# the command workload (tests/test_command.py): mptcpd's mptcpize forces MPTCP on the programs it runs,
# iperf3 is the program the test (and bench/bulk_overhead.py) runs; bench/rr_latency.py also wants sockperf
DEB_PACKAGES += mptcpd iperf3
# kernels built from source (mptcplab kernel build), and the kernel selftests (mptcplab selftest: make generates the
# uapi headers their programs compile against): the kernel's build needs make, gcc, flex and bison (Kconfig's
# parser), bc (timeconst), libelf-dev (objtool, for the qemu flavour's x86 kernel), libssl-dev (x86's certificate
# tools) and xz-utils (the linux-source tarballs); ccache is used when installed, not required
DEB_PACKAGES += make flex bison bc libelf-dev libssl-dev xz-utils

.PHONY: install deb-packages demo test bench clean lock

install: deb-packages $(VENV)/.installed

installed = dpkg-query -W -f='$${Status}' $(1) 2>/dev/null | grep -q "install ok installed"

deb-packages:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  $(call installed,$$p) || missing="$$missing $$p"; \
	done; \
	fsd=""; for f in $(VIRTIOFSD_BINARIES); do [ -x $$f ] && fsd=$$f; done; \
	if [ -n "$$missing" ] || { [ -z "$$fsd" ] && ! $(call installed,virtiofsd); }; then \
	  apt-get update -qq; \
	fi; \
	if [ -z "$$fsd" ] && ! $(call installed,virtiofsd) && \
	   apt-cache policy virtiofsd 2>/dev/null | grep -q "Candidate: [^(]"; then \
	  missing="$$missing virtiofsd"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c $(LOCK) --upgrade pip
	$(VENV)/bin/pip install -q -c $(LOCK) -e '.[test]'
	touch $@

# Resolve the newest versions pyproject.toml allows in a scratch venv and pin them; review the diff, run
# `make test`, commit both. Nothing else changes the lock.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q '.[test]'
	{ echo "# The exact versions \`make install\` installs (pip install -c $(LOCK)): the dependency closure of"; \
	  echo "# mptcplab[test] that the test suite passed with. Update on purpose with \`make lock\`, then run \`make test\`."; \
	  echo "pip==$$(.lock-venv/bin/pip --version | cut -d' ' -f2)"; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v '^mptcplab[ =@]'; } > $(LOCK)
	rm -rf .lock-venv

demo: install
	$(VENV)/bin/mptcplab run demo

# Two phases, one exit code (the first failing phase's). Light tests (marked `light`: no traffic, no guest, no
# PostgreSQL; tests/conftest.py) run two at a time with pytest-xdist, a test module per worker so its module
# fixtures are built once; every other test then runs alone, since rates, delays and guest timeouts assume the
# machine to themselves. Either phase's failures are listed at its end (-ra).
test: install
	@status=0; \
	echo "== make test, phase 1 of 2: light tests, two at a time (pytest -m 'not heavy' -n 2)"; \
	$(VENV)/bin/pytest -v -m "not heavy" -n 2 --dist loadscope || status=$$?; \
	echo "== make test, phase 2 of 2: heavy tests, one at a time (pytest -m heavy)"; \
	$(VENV)/bin/pytest -v -m heavy || { s=$$?; [ $$status -ne 0 ] || status=$$s; }; \
	exit $$status

bench: install
	$(VENV)/bin/python bench/topology_build.py
	flock /tmp/mptcplab-heavy.lock $(VENV)/bin/python bench/link_accuracy.py --workers both
	$(VENV)/bin/mptcplab kernel fetch 6.1 && $(VENV)/bin/mptcplab kernel fetch 6.12
	$(VENV)/bin/python bench/guest_overhead.py --kernels 6.1,6.12
	$(VENV)/bin/python bench/verdict_validation.py
	flock /tmp/mptcplab-heavy.lock $(VENV)/bin/python bench/report_build.py --runs 1000

clean:
	rm -rf $(VENV) .lock-venv build src/*.egg-info
