#!/usr/bin/env bash
# Regenerates the Go code for proto/**/*.proto with pinned generators:
#   protoc            Debian's protobuf-compiler (scripts/deps/proto.txt)
#   protoc-gen-go     google.golang.org/protobuf, version pinned by go.mod (tool directive)
#   protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc, pinned by go.mod (tool directive)
#   protoc-gen-grpc-gateway, protoc-gen-openapiv2
#                     github.com/grpc-ecosystem/grpc-gateway/v2, pinned by go.mod (tool directive):
#                     the REST gateway (proto/iotfabric/v1/gw, a package of its own so that
#                     only the controller links it) and the OpenAPI document pkg/rest/openapi.json
#                     (options in proto/openapi.yaml), from the google.api.http annotations.
# proto/third_party holds the imported google/api protos; no Go is generated for them
# (their Go package is google.golang.org/genproto/googleapis/api/annotations).
# With --check, generates into a temporary tree and fails if it differs from what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
[ "${1:-}" = "--check" ] && check=1
files=$(find proto -name '*.proto' -not -path 'proto/third_party/*' | sort)
[ -n "$files" ] || exit 0
command -v protoc >/dev/null || { echo "protoc not found: run 'make deps' as root (Debian package protobuf-compiler)" >&2; exit 1; }
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
go build -o "$tools/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2
out=proto
openapi=pkg/rest/openapi.json
if [ $check = 1 ]; then out="$tools/out"; mkdir -p "$out"; openapi="$tools/openapi.json"; fi
gw="$tools/gw" oa="$tools/oa"
mkdir -p "$gw" "$oa"
PATH="$tools:$PATH" protoc -I proto -I proto/third_party \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  --grpc-gateway_out="$gw" --grpc-gateway_opt=paths=source_relative,standalone=true \
  $files
# The gateway code: one package per proto package, in its gw subdirectory.
for f in $(cd "$gw" && find . -name '*.pb.gw.go' | sort); do
  d="$out/$(dirname "$f")/gw"
  mkdir -p "$d"
  pkg=$(sed -n 's/^package //p' "$gw/$f")
  sed -e "s/^package $pkg\$/package ${pkg}gw/" -e "s/^Package $pkg is a reverse proxy\./Package ${pkg}gw is a reverse proxy./" "$gw/$f" >"$d/$(basename "$f")"
done
# The OpenAPI document: the annotated services, merged into one file. The errors are
# pkg/rest's (iotfabric.v1.RestError, proto/openapi.yaml), not grpc-gateway's default.
PATH="$tools:$PATH" protoc -I proto -I proto/third_party \
  --openapiv2_out="$oa" \
  --openapiv2_opt=allow_merge=true,merge_file_name=openapi,output_format=json,preserve_rpc_order=true,disable_default_errors=true,openapi_configuration=proto/openapi.yaml \
  proto/iotfabric/v1/services.proto proto/iotfabric/v1/bgp.proto proto/iotfabric/v1/enroll.proto proto/iotfabric/v1/console.proto
cp "$oa/openapi.swagger.json" "$openapi"
if [ $check = 1 ]; then
  rc=0
  for f in $(cd "$out" && find . -name '*.go' | sort); do
    cmp -s "$out/$f" "proto/$f" || { echo "proto-check: proto/${f#./} is stale: run 'make proto' and commit" >&2; rc=1; }
  done
  for f in $(cd proto && find . -name '*.pb.go' -o -name '*.pb.gw.go' | sort); do
    [ -f "$out/$f" ] || { echo "proto-check: proto/${f#./} has no .proto source any more" >&2; rc=1; }
  done
  cmp -s "$openapi" pkg/rest/openapi.json || { echo "proto-check: pkg/rest/openapi.json is stale: run 'make proto' and commit" >&2; rc=1; }
  exit $rc
fi
