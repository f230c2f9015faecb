package kubelite

import (
	"encoding/json"
	"errors"
	"io"
)

// decoder reads JSON values from a stream (a watch, a list's body), none of
// which may take more than max bytes: the reader under the json.Decoder is
// cut at max bytes past the decoder's position, so a larger value is
// refused with a TooLargeError before it is buffered whole, and memory is
// bounded by max whatever the API server sends.
type decoder struct {
	lr   budgetReader
	dec  *json.Decoder
	max  int64
	what string
}

func newDecoder(r io.Reader, max int64, what string) *decoder {
	d := &decoder{lr: budgetReader{r: r}, max: max, what: what}
	d.dec = json.NewDecoder(&d.lr)
	return d
}

// decode reads the next value into v.
func (d *decoder) decode(v any) error {
	d.lr.limit = d.dec.InputOffset() + d.max
	return d.err(d.dec.Decode(v))
}

// token reads the next token (within the same bound).
func (d *decoder) token() (json.Token, error) {
	d.lr.limit = d.dec.InputOffset() + d.max
	t, err := d.dec.Token()
	return t, d.err(err)
}

// more reports whether the current array or object has another element.
func (d *decoder) more() bool {
	d.lr.limit = d.dec.InputOffset() + d.max
	return d.dec.More()
}

func (d *decoder) err(err error) error {
	if errors.Is(err, errOverBudget) {
		return &TooLargeError{What: d.what, Limit: d.max}
	}
	return err
}

var errOverBudget = errors.New("kubelite: read budget exhausted")

// budgetReader reads from r up to limit bytes in all (an absolute offset
// the decoder moves forward).
type budgetReader struct {
	r     io.Reader
	read  int64
	limit int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	left := b.limit - b.read
	if left <= 0 {
		return 0, errOverBudget
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	return n, err
}
