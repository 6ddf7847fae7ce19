# Two commands on a fresh machine: `make demo` (the embedded quickstart) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SITE   ?= local-htex

.PHONY: demo test test-all setup system-deps slurm-local browser bench clean-venv quickstart-run free-energy exploration finetune transfer

demo: setup
	$(VENV)/bin/reactforge run --site $(SITE) examples/quickstart.yaml

# What the trained force field is for (thesis §3.4.3), on the quickstart's finished run: free-energy barriers
# by umbrella sampling, adsorbate minima by minima hopping. Each runs `make demo` first when the quickstart run
# is not complete (~15-40 min on 2 cores, by machine), then itself (~15 min each).
QUICKSTART_RUN := runs/quickstart-zno-vacancy

quickstart-run: setup
	@$(PY) -c "import json, sys; sys.exit(json.load(open('$(QUICKSTART_RUN)/summary.json')).get('status') != 'completed')" \
	  2>/dev/null || $(VENV)/bin/reactforge run --site $(SITE) examples/quickstart.yaml

free-energy: quickstart-run
	$(VENV)/bin/reactforge run --site $(SITE) examples/quickstart-free-energy.yaml

exploration: quickstart-run
	$(VENV)/bin/reactforge run --site $(SITE) examples/quickstart-exploration.yaml

# The quickstart's labels transferred to MACE, beside its GAP, and a Cu dopant added (thesis §3.5).
transfer: quickstart-run
	$(VENV)/bin/reactforge run --site $(SITE) examples/quickstart-transfer.yaml

# Fine-tuning a foundation model (thesis ch. 4) on the quickstart's system. No weights are downloaded: the
# foundation is a stand-in, a small MACE trained here on the quickstart run's GFN2-xTB labels (ZBL pair
# repulsion keeps its MD from collapsing where it has seen no data); on a cluster, point the example's
# `foundation_model` at MACE-MP-0's file instead.
FOUNDATION := runs/quickstart-foundation/foundation.model

$(FOUNDATION): | quickstart-run
	mkdir -p $(@D) && cd $(@D) && $(abspath $(VENV))/bin/mace_run_train --name=foundation \
	  --train_file=$(abspath $(QUICKSTART_RUN))/dataset.xyz --valid_fraction=0.1 --energy_key=REF_energy \
	  --forces_key=REF_forces --E0s=average --model=MACE --hidden_irreps=16x0e --r_max=4.0 --num_interactions=2 \
	  --max_L=0 --correlation=2 --pair_repulsion --batch_size=8 --max_num_epochs=60 --patience=60 --device=cpu \
	  --default_dtype=float64 --seed=1 --save_cpu > train.log 2>&1

finetune: quickstart-run $(FOUNDATION)
	$(VENV)/bin/reactforge run --site $(SITE) examples/finetune.yaml

test: setup slurm-local browser
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

setup: system-deps $(STAMP)

# Quantum ESPRESSO and MPI from Debian (as root on fresh machines; skipped when pw.x exists), and NWChem
# (GIAO shieldings and EFGs of molecules and clusters: nmrshielding code 'nwchem'; skipped when nwchem exists).
system-deps:
	@if ! command -v pw.x >/dev/null 2>&1 || ! command -v mpirun >/dev/null 2>&1; then \
	  echo "installing quantum-espresso and openmpi from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    quantum-espresso quantum-espresso-data openmpi-bin >/dev/null; \
	fi
	@if ! command -v nwchem >/dev/null 2>&1; then \
	  echo "installing nwchem from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nwchem >/dev/null; \
	fi

# A single-node SLURM for tests/test_slurm.py and site-configs/slurm-local.yaml. Where it cannot be installed
# or started (not root, no apt), the suite still runs: test_slurm.py skips with the reason printed here.
slurm-local: system-deps
	@bash scripts/slurm-local.sh || echo "no local SLURM: tests/test_slurm.py will be skipped (reason above)"

# Debian's chromium renders report/index.html headless in tests/test_report_browser.py (skipped without it).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium from Debian (the report's browser test)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "no chromium: tests/test_report_browser.py will be skipped"; }

# torch 2.13.0 first: it is the local CPU build; mace-torch would otherwise pull a CUDA build.
# The `all` extra: MACE/MFN (`mace`) and the NMR tests' reference implementations (`test`), which the
# test suite needs; the catalysis protocol alone runs on `pip install .`.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

bench: setup
	$(PY) benchmarks/engine.py

clean-venv:
	rm -rf $(VENV)
