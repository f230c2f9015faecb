// Package bench holds the IQRF collector's benchmark (make bench-iqrf): DPA
// frames decoded per second on one core, and the time from a reading's
// response frame to its line accepted by carbon, each printed beside a peer
// measured in the same run.
package bench
