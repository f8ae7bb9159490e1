# `make demo` and `make test` each create or reuse .venv, so either works on a fresh clone.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# timm imports torchvision: on this machine only this pair imports together (pip takes both from local disk).
TORCH  ?= torch==2.14.1 torchvision==0.29.1
export OMP_NUM_THREADS ?= 2

.PHONY: venv test test-slow demo bench shapes-model clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q tests

test-slow: venv
	$(PY) -m pytest -q -m slow tests

demo: venv
	$(PY) -m agents.demo

# The bundled Shapes perception model, in four stages (docs/checkpoints.md): about 2 h 20 min of one CPU core.
shapes-model: venv
	test -d data/shapes || for task in Reach Push OddOneOut; do \
	  $(PY) -m oc_perception.data.generate --env oc/Shapes$$task-v0 --episodes 600 --steps 24 --val-episodes 30 \
	    --out data/shapes || exit 1; done
	$(PY) -m oc_perception.train shapes_stage1 --data-dir data --log-dir runs/shapes_stage1
	$(PY) -m oc_perception.train shapes_stage2 --data-dir data --log-dir runs/shapes_stage2 \
	  --init-from runs/shapes_stage1/model.safetensors
	$(PY) -m oc_perception.train shapes_stage3 --data-dir data --log-dir runs/shapes_stage3 \
	  --init-from runs/shapes_stage2/model.safetensors
	$(PY) -m oc_perception.train shapes --data-dir data --log-dir runs/shapes \
	  --init-from runs/shapes_stage3/model.safetensors
	cp runs/shapes/model.safetensors oc_perception/checkpoints/shapes.safetensors

bench: venv
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs build *.egg-info
