# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vidseg-installed
ARCH   := $(shell uname -m)
# timm imports torchvision, so torch and torchvision must be a matching pair (see README).
ifeq ($(ARCH),aarch64)
TORCH_PAIR := torch==2.9.1 torchvision==0.24.1
else
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
endif
DEMO_DIR ?= outputs/demo
# The exact versions CI tested (README, "Dependencies"); `make lock` regenerates the file.
# `make setup CONSTRAINTS=` installs the newest versions pyproject.toml allows instead.
CONSTRAINTS ?= constraints.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: setup demo test bench lock clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PIP_C) $(TORCH_PAIR)
	$(BIN)/python -m pip install --quiet $(PIP_C) -e '.[dev,tb]'
	touch $(STAMP)

setup: $(STAMP)

# A fresh .venv with the newest allowed versions, frozen into constraints.txt. torch/torchvision
# are left to TORCH_PAIR (per architecture), and the CUDA wheels torch pins exactly (nvidia-*,
# cuda-*, triton) apply to x86_64 only. Then run `make test`; commit constraints.txt if it passes.
lock:
	rm -rf $(VENV)
	$(MAKE) setup CONSTRAINTS=
	{ echo "# Exact versions for \`make setup\` (pip install -c), frozen by \`make lock\` on" \
	    "$$($(BIN)/python -c 'import platform as p; print(p.python_version(), p.machine())')."; \
	  echo "# torch/torchvision: TORCH_PAIR in the Makefile, per architecture. See README."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(torch|torchvision)==' \
	    | sed -E 's/^((nvidia-|cuda-|triton)[^ ]*)$$/\1 ; platform_machine == "x86_64"/'; \
	} > constraints.txt.new
	mv constraints.txt.new constraints.txt
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/vidseg demo --out $(DEMO_DIR)

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: setup
	for f in bench/*.py; do HF_HUB_OFFLINE=1 $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) outputs work_dirs .pytest_cache
