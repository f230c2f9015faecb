#!/usr/bin/env bash
# Regenerates the Go code for proto/**/*.proto with pinned generators:
#   protoc            Debian's protobuf-compiler (scripts/deps/proto.txt)
#   protoc-gen-go     google.golang.org/protobuf, version pinned by go.mod (tool directive)
#   protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc, pinned by go.mod (tool directive)
# With --check, generates into a temporary tree and fails if it differs from what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
[ "${1:-}" = "--check" ] && check=1
files=$(find proto -name '*.proto' | sort)
[ -n "$files" ] || exit 0
command -v protoc >/dev/null || { echo "protoc not found: run 'make deps' as root (Debian package protobuf-compiler)" >&2; exit 1; }
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
go build -o "$tools/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
out=proto
if [ $check = 1 ]; then out="$tools/out"; mkdir -p "$out"; fi
PATH="$tools:$PATH" protoc -I proto \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  $files
if [ $check = 1 ]; then
  rc=0
  for f in $(cd "$out" && find . -name '*.go' | sort); do
    cmp -s "$out/$f" "proto/$f" || { echo "proto-check: proto/${f#./} is stale: run 'make proto' and commit" >&2; rc=1; }
  done
  for f in $(cd proto && find . -name '*.pb.go' | sort); do
    [ -f "$out/$f" ] || { echo "proto-check: proto/${f#./} has no .proto source any more" >&2; rc=1; }
  done
  exit $rc
fi
