package model

import (
	"errors"
	"fmt"
	"time"
)

// Error kinds of the domain (pkg/controller, pkg/vpn). Domain code returns
// errors that wrap one of them (see Errorf); the transport (pkg/api) maps each
// kind to its protocol's code in one table. The kinds say what the caller can
// do about the error; the message says what to fix.
var (
	// ErrInvalid: the request itself is wrong (a name, an address, a range).
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: a resource the request names does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the resource, or a unique value it claims (an address, a
	// label), already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: the request is well formed but the current state refuses it
	// (a network with endpoints cannot be deleted); change the state first.
	ErrConflict = errors.New("conflicts with the current state")
	// ErrExhausted: a finite space (addresses, blocks, network ids) is used up.
	ErrExhausted = errors.New("exhausted")
	// ErrAborted: too many concurrent changes; the same request may succeed
	// when tried again.
	ErrAborted = errors.New("aborted by concurrent change")
	// ErrUnavailable: the store or the BGP speaker cannot be reached now.
	ErrUnavailable = errors.New("unavailable")
	// ErrCorrupt: a stored record cannot be decoded.
	ErrCorrupt = errors.New("corrupt record")
	// ErrUnauthenticated: a credential the request carries (a bootstrap
	// token) is unknown, used, expired or wrong.
	ErrUnauthenticated = errors.New("unauthenticated")
)

// kindError is a message of one kind. Its text is the message alone, so that
// users read what to fix; errors.Is finds both the kind and any error the
// message wraps with %w.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// Errorf formats a message (with %w as fmt.Errorf) and marks it with kind, one
// of the Err* kinds above.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

// Invalid marks an error of pkg/validate (or any other message) as ErrInvalid.
func Invalid(err error) error {
	if err == nil {
		return nil
	}
	return &kindError{kind: ErrInvalid, err: err}
}

// HasKind reports whether err wraps one of the kinds above.
func HasKind(err error) bool {
	for _, k := range kinds {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

var kinds = []error{ErrInvalid, ErrNotFound, ErrExists, ErrConflict, ErrExhausted, ErrAborted, ErrUnavailable, ErrCorrupt, ErrUnauthenticated}

// RetryAfter marks an error of kind ErrExhausted caused by load: the same
// request may succeed after the delay (the transport passes it on to the
// caller, who adds jitter).
type RetryAfter struct {
	Err   error
	After time.Duration
}

func (e *RetryAfter) Error() string { return e.Err.Error() }
func (e *RetryAfter) Unwrap() error { return e.Err }

// Busy returns an ErrExhausted error saying what is busy, to be retried after d.
func Busy(d time.Duration, format string, args ...any) error {
	return &RetryAfter{Err: Errorf(ErrExhausted, format, args...), After: d}
}
