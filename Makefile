# llmux — one Makefile. See README.md and ../shared/DESIGN.md (layout, tiers).
#   make            lib/libllmux.a, kernels/libllmk.a, bin/llm-*
#   make test       everything in t/ (installs what it needs first)
#   make demo       build, then show the programs at work
#   make deps       the Debian packages the build and the tests need
#   make install    PREFIX=/usr/local: programs and man pages
#   make conformance / fuzz / gpu-check / bench / clean

PREFIX  ?= /usr/local
CC      ?= cc
OPT     ?= -O2 -g
CFLAGS  ?= $(OPT)
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
ALL_CFLAGS := -std=gnu11 -D_GNU_SOURCE -pthread $(WARN) -Ilib -Ikernels $(CFLAGS)
LDLIBS  := -lmsgpackc -ljansson -lpcre2-8 -lutf8proc -larchive -lxxhash -lprotobuf-c -lm -pthread

# CUDA: compiled wherever nvcc exists, GPU or not.
NVCC    ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80
NVCCFLAGS := -O2 -std=c++17 $(CUDA_ARCH) -Ikernels -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -DLLMK_CUDA
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))

LIB_SRC     := $(sort $(wildcard lib/*.c))
KERNEL_SRC  := $(sort $(wildcard kernels/*.c))
CUDA_SRC    := $(sort $(wildcard kernels/*.cu))
TOOL_SRC    := $(sort $(wildcard tools/*.c))
PROGRAMS    := $(patsubst tools/%.c,bin/%,$(TOOL_SRC))
LIB_OBJ     := $(patsubst %.c,build/%.o,$(LIB_SRC))
KERNEL_OBJ  := $(patsubst %.c,build/%.o,$(KERNEL_SRC))
ifneq ($(NVCC),)
KERNEL_OBJ  += $(patsubst %.cu,build/%.cu.o,$(CUDA_SRC))
endif
# ONNX (llm-convert --to onnx): protoc-c makes C from lib/onnx/onnx-subset.proto
# at build time, into build/onnx/. Only lib/onnx/*.c include it (lib/*.c are
# also built without build/, by t/fuzz/run); all of it goes into libllmux.a.
ONNX_SRC    := $(sort $(wildcard lib/onnx/*.c))
ONNX_OBJ    := build/onnx/onnx-subset.pb-c.o $(patsubst %.c,build/%.o,$(ONNX_SRC))
LIB_OBJ     += $(ONNX_OBJ)
UNIT_SRC    := $(sort $(wildcard t/unit/test_*.c))
UNIT_BIN    := $(patsubst t/unit/%.c,build/t/%,$(UNIT_SRC))
HELPER_SRC  := $(sort $(wildcard t/helpers/*.c))
HELPER_BIN  := $(patsubst t/helpers/%.c,build/t/%,$(HELPER_SRC))
MAN_PAGES   := $(sort $(wildcard man/man1/*.1 man/man5/*.5))

.PHONY: all test demo deps install uninstall conformance fuzz gpu-check bench clean check-cuda unit-tests
.SUFFIXES:
.DELETE_ON_ERROR:
.SECONDARY:

all: check-cuda lib/libllmux.a kernels/libllmk.a $(PROGRAMS)

check-cuda:
ifeq ($(NVCC),)
	@echo "note: nvcc not found: building the CPU parts only (CUDA kernels skipped)"
endif

build/%.o: %.c $(wildcard lib/*.h kernels/*.h t/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

build/%.cu.o: %.cu kernels/llmk.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# a pattern rule with two targets: one run of protoc-c makes both
build/onnx/%.pb-c.c build/onnx/%.pb-c.h: lib/onnx/%.proto
	@mkdir -p build/onnx
	protoc-c --proto_path=lib/onnx --c_out=build/onnx $<

build/onnx/onnx-subset.pb-c.o: build/onnx/onnx-subset.pb-c.c build/onnx/onnx-subset.pb-c.h
	$(CC) $(ALL_CFLAGS) -Ibuild/onnx -c $< -o $@

build/lib/onnx/%.o: lib/onnx/%.c build/onnx/onnx-subset.pb-c.h $(wildcard lib/*.h lib/onnx/*.h kernels/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ibuild/onnx -c $< -o $@

build/lib/cv_onnx.o: $(wildcard lib/onnx/*.h)

lib/libllmux.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

kernels/libllmk.a: $(KERNEL_OBJ)
	rm -f $@ && ar rcs $@ $^

# Every program is linked the same way, as git links its commands.
bin/%: build/tools/%.o lib/libllmux.a kernels/libllmk.a
	@mkdir -p bin
	$(CC) $(ALL_CFLAGS) $< lib/libllmux.a kernels/libllmk.a $(LDLIBS) -o $@

# llm-serve has its parts in tools/serve/ (the chat page included as bytes)
# and libmicrohttpd besides.
SERVE_OBJ := $(patsubst %.c,build/%.o,$(sort $(wildcard tools/serve/*.c))) build/tools/serve/page.o
build/tools/serve/%.o: tools/serve/%.c tools/serve/server.h $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@
build/tools/serve/page.o: tools/serve/page.S tools/serve/chat.html
	@mkdir -p $(dir $@)
	$(CC) -c $< -o $@
bin/llm-serve: build/tools/llm-serve.o $(SERVE_OBJ) lib/libllmux.a kernels/libllmk.a
	@mkdir -p bin
	$(CC) $(ALL_CFLAGS) $< $(SERVE_OBJ) lib/libllmux.a kernels/libllmk.a -lmicrohttpd $(LDLIBS) -o $@

build/t/%: t/unit/%.c lib/libllmux.a kernels/libllmk.a t/unit/unit.h
	@mkdir -p build/t
	$(CC) $(ALL_CFLAGS) -It/unit $< lib/libllmux.a kernels/libllmk.a $(LDLIBS) -o $@

build/t/%: t/helpers/%.c lib/libllmux.a kernels/libllmk.a
	@mkdir -p build/t
	$(CC) $(ALL_CFLAGS) $< lib/libllmux.a kernels/libllmk.a $(LDLIBS) -o $@

build/bench/%: bench/%.c lib/libllmux.a kernels/libllmk.a
	@mkdir -p build/bench
	$(CC) $(ALL_CFLAGS) $< lib/libllmux.a kernels/libllmk.a $(LDLIBS) -o $@

BENCH_BIN := $(patsubst bench/%.c,build/bench/%,$(sort $(wildcard bench/*.c)))

unit-tests: $(UNIT_BIN) $(HELPER_BIN)

# ---- dependencies: Debian packages, installed only when missing ----
deps:
	@scripts/deps

# ---- tests ----
test: deps all unit-tests
	@t/run-all

conformance: deps all unit-tests
	@t/run-all conformance

fuzz: deps all
	@t/fuzz/run $${FUZZ_SECONDS:-60}

gpu-check: deps all
	@t/gpu/check

bench: deps all $(BENCH_BIN)
	@bench/run

demo: deps all unit-tests
	@examples/demo.sh

# ---- install ----
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	for page in $(MAN_PAGES); do install -m 644 $$page $(DESTDIR)$(PREFIX)/share/man/$${page#man/}; done

uninstall:
	rm -f $(patsubst bin/%,$(DESTDIR)$(PREFIX)/bin/%,$(PROGRAMS))
	rm -f $(patsubst man/%,$(DESTDIR)$(PREFIX)/share/man/%,$(MAN_PAGES))

clean:
	rm -rf build bin lib/libllmux.a kernels/libllmk.a
