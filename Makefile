# Klassenfunk. `make run` serves on embedded defaults; `make test` runs every
# test (installing redis-server and chromium first when they are missing).
GO       ?= go
BIN      := bin/klassenfunk
PKGS     := ./...

.PHONY: all build run test test-deps vet cross check bench fuzz load clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/klassenfunk

run: build
	./$(BIN) serve

# The one test command: dependencies, vet, race tests, every benchmark once.
test: test-deps vet cross
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)

test-deps:
	@scripts/test-deps.sh

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

# The server is deployed on Linux, but the app teams run it on their
# laptops too: it must keep building on macOS and Windows (there without
# the epoll poller, and kfload, a Linux load tool, is left out).
cross:
	GOOS=darwin GOARCH=arm64 $(GO) vet $(PKGS)
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./cmd/klassenfunk

check: test

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeClientFrame -fuzztime 60s ./proto

clean:
	rm -rf bin
