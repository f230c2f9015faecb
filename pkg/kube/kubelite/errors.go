package kubelite

import (
	"errors"
	"fmt"
	"net/http"
)

// StatusError is an API server's refusal: the HTTP status and the
// metav1.Status it sent (reason and message), or the status alone when the
// body was not a Status.
type StatusError struct {
	Method, Path string
	Code         int
	Reason       string
	Message      string
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	if e.Reason != "" {
		return fmt.Sprintf("kubernetes API %s %s: %d %s: %s", e.Method, e.Path, e.Code, e.Reason, msg)
	}
	return fmt.Sprintf("kubernetes API %s %s: %d: %s", e.Method, e.Path, e.Code, msg)
}

// status is a metav1.Status as the API server sends it with an error, and
// as the object of a watch ERROR event.
type status struct {
	Kind    string `json:"kind"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
	Code    int    `json:"code"`
}

func code(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func reason(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Reason
	}
	return ""
}

// IsNotFound reports whether the API server answered that the object does
// not exist.
func IsNotFound(err error) bool { return code(err) == http.StatusNotFound }

// IsConflict reports a conflict (a precondition such as metadata.uid not
// met, or an object that already exists).
func IsConflict(err error) bool { return code(err) == http.StatusConflict }

// IsInvalid reports a request the API server found invalid.
func IsInvalid(err error) bool {
	return code(err) == http.StatusUnprocessableEntity || reason(err) == "Invalid"
}

// IsGone reports an expired resource version or continue token (410 Gone,
// reasons Expired and Gone): the list is to be read again.
func IsGone(err error) bool {
	r := reason(err)
	return code(err) == http.StatusGone || r == "Expired" || r == "Gone"
}

// IsUnauthorized reports a refused credential (401).
func IsUnauthorized(err error) bool { return code(err) == http.StatusUnauthorized }

// TooLargeError refuses an object, event or response larger than the
// client's bound (Config.MaxObjectBytes).
type TooLargeError struct {
	// What was being read, e.g. "watch event of pods".
	What  string
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("kubernetes API: %s larger than %d bytes (the client's MaxObjectBytes): refused", e.What, e.Limit)
}
