package collector

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
)

const recordVersion = 1

// AppendRecord encodes r for the on-disk queue.
func (r Reading) AppendRecord(b []byte) []byte {
	b = append(b, recordVersion, r.Node, byte(r.Index), r.Type)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(r.Value))
	b = append(b, byte(min(len(r.Metric), 255)))
	return append(b, r.Metric[:min(len(r.Metric), 255)]...)
}

// DecodeRecord decodes a record written by AppendRecord.
func DecodeRecord(b []byte) (Reading, error) {
	if len(b) < 21 || b[0] != recordVersion || len(b) != 21+int(b[20]) {
		return Reading{}, fmt.Errorf("reading record of %d bytes: %w", len(b), dpa.ErrMalformed)
	}
	return Reading{
		Node:   b[1],
		Index:  int(b[2]),
		Type:   b[3],
		Time:   time.Unix(0, int64(binary.LittleEndian.Uint64(b[4:]))),
		Value:  math.Float64frombits(binary.LittleEndian.Uint64(b[12:])),
		Metric: string(b[21:]),
	}, nil
}
