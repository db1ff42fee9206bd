# Klassenfunk. `make run` serves on embedded defaults; `make test` runs every
# test (installing redis-server and chromium first when they are missing).
GO       ?= go
BIN      := bin/klassenfunk
PKGS     := ./...

.PHONY: all build run test test-deps vet check bench fuzz load clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/klassenfunk

run: build
	./$(BIN) serve

# The one test command: dependencies, vet, race tests, every benchmark once.
test: test-deps vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)

test-deps:
	@scripts/test-deps.sh

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

check: test

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeClientFrame -fuzztime 60s ./proto

clean:
	rm -rf bin
