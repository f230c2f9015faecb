package rest

import _ "embed"

// OpenAPI is the OpenAPI (Swagger 2.0) document of the REST API, generated
// from the protos' google.api.http annotations by protoc-gen-openapiv2
// (make proto; make proto-check fails when it is stale). It is served at
// /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte
