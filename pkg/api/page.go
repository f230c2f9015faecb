package api

import (
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/model"
)

// Pagination of every List RPC (AIP-158).
const (
	// DefaultPageSize is the page size when the request gives none.
	DefaultPageSize = 500
	// MaxPageSize is the largest page: a larger page_size is lowered to it.
	// A page of 5,000 of the largest records stays far below model.MaxMsgSize.
	MaxPageSize = 5000
)

// tokenVersion is the first byte of every page token.
const tokenVersion = 1

// maxTokenLen bounds a page token before it is decoded (a store key is at
// most 1,024 bytes).
const maxTokenLen = 2048

var tokenTable = crc32.MakeTable(crc32.Castagnoli)

// pageToken is the opaque next_page_token of a page: URL-safe base64 of a
// version byte, the key the next page starts after, and a CRC-32C of the key
// and the listing's scope (the RPC and its filters). The checksum makes a
// token that was altered, truncated or used with other filters fail with
// INVALID_ARGUMENT rather than start elsewhere; it is not a secret: a token
// only positions a listing the caller may read in full anyway.
func pageToken(scope, key string) string {
	if key == "" {
		return ""
	}
	b := make([]byte, 0, 1+len(key)+4)
	b = append(b, tokenVersion)
	b = append(b, key...)
	b = binary.BigEndian.AppendUint32(b, tokenSum(scope, key))
	return base64.RawURLEncoding.EncodeToString(b)
}

func tokenSum(scope, key string) uint32 {
	h := crc32.New(tokenTable)
	h.Write([]byte(scope))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return h.Sum32()
}

// page turns a request's page_size and page_token into a controller.Page.
func page(scope string, size int32, token string) (controller.Page, error) {
	p := controller.Page{Size: DefaultPageSize}
	switch {
	case size < 0:
		return p, model.Errorf(model.ErrInvalid, "page_size %d is negative", size)
	case size > MaxPageSize:
		p.Size = MaxPageSize
	case size > 0:
		p.Size = int(size)
	}
	if token == "" {
		return p, nil
	}
	bad := model.Errorf(model.ErrInvalid, "page_token is not one this listing returned (it was changed, or the filters differ from the first page's)")
	if len(token) > maxTokenLen {
		return p, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 1+1+4 || b[0] != tokenVersion {
		return p, bad
	}
	key := string(b[1 : len(b)-4])
	if binary.BigEndian.Uint32(b[len(b)-4:]) != tokenSum(scope, key) {
		return p, bad
	}
	p.After = key
	return p, nil
}

// scope names a listing and its filters for its page tokens.
func scope(rpc string, filters ...string) string {
	s := rpc
	for _, f := range filters {
		s += "\x00" + f
	}
	return s
}
