# Set-up is part of every target: a fresh machine needs only python3 (3.11) and make.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo serve test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed  ## the main job on the built-in offline default
	HF_HUB_OFFLINE=1 $(BIN)/taxonlens demo

serve: $(VENV)/.installed  ## the web page and HTTP API on 127.0.0.1:8000 (the demo's model unless MODEL=...)
	HF_HUB_OFFLINE=1 $(BIN)/taxonlens serve $(if $(MODEL),--model $(MODEL))

test: $(VENV)/.installed  ## the test suite
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check taxonlens tests
