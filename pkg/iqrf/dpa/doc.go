// Package dpa encodes and decodes IQRF DPA messages: requests, responses,
// confirmations and asynchronous frames exactly as they cross the interface
// between a host and an IQRF coordinator (the link layer only wraps them).
//
// Decoding never allocates: a decoded Frame refers to the input buffer for
// its PData.
package dpa
