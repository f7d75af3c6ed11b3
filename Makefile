# mptcplab: `make demo` runs the built-in demo, `make test` the whole test suite.
# Both install what is missing first (Debian/Ubuntu, as root).

PYTHON ?= python3
VENV   := .venv
# iproute2: ip/tc for users and the topology benchmark; kmod, procps: doctor and nstat;
# python3-venv: the virtualenv; git: the commit recorded with each result.
# postgresql: the store tests start a throwaway PostgreSQL cluster of their own.
DEB_PACKAGES := iproute2 procps kmod git python3 python3-venv python3-dev gcc ethtool postgresql
# other kernels (run --kernel, matrix): QEMU (with its virtiofsd on bookworm), busybox for the guest's init,
# apt + dpkg-deb (in every Debian) fetch and unpack Debian kernels, kmod's depmod indexes their modules
DEB_PACKAGES += qemu-system-x86 busybox-static
# the report's browser tests (tests/test_report.py): headless Chromium driven by Selenium through chromedriver
DEB_PACKAGES += chromium chromium-driver

.PHONY: install deb-packages demo test bench clean

install: deb-packages $(VENV)/.installed

deb-packages:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

demo: install
	$(VENV)/bin/mptcplab run demo

test: install
	$(VENV)/bin/pytest -v

bench: install
	$(VENV)/bin/python bench/topology_build.py
	flock /tmp/mptcplab-heavy.lock $(VENV)/bin/python bench/link_accuracy.py --workers both
	$(VENV)/bin/mptcplab kernel fetch 6.1 && $(VENV)/bin/mptcplab kernel fetch 6.12
	$(VENV)/bin/python bench/guest_overhead.py --kernels 6.1,6.12
	$(VENV)/bin/python bench/verdict_validation.py
	flock /tmp/mptcplab-heavy.lock $(VENV)/bin/python bench/report_build.py --runs 1000

clean:
	rm -rf $(VENV) build src/*.egg-info
