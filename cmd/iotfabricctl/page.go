package main

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// listPageSize is the page size list commands ask for (the controller's
// largest): fewer round trips, and a page is still far below the message limit.
const listPageSize = 5000

// listFlags registers --limit on a list command.
func (c *cli) listFlags(cmd *cobra.Command) {
	cmd.Flags().IntVar(&c.limit, "limit", 0, "show at most `N` records (0: all)")
}

// listPages fetches a listing page by page, each page within --timeout, and
// hands every page to show as it arrives, until the listing ends or --limit
// records were shown. fetch gets the page token ("" first) and the page size,
// and returns the page and the next token ("" at the end).
func listPages[T any](ctx context.Context, c *cli, fetch func(ctx context.Context, token string, size int32) ([]T, string, error), show func([]T) error) error {
	if c.limit < 0 {
		return usagef("--limit %d: want 0 (all) or more", c.limit)
	}
	token, shown := "", 0
	for {
		size := listPageSize
		if c.limit > 0 {
			size = min(size, c.limit-shown)
		}
		pctx, cancel := context.WithTimeout(ctx, c.timeout)
		page, next, err := fetch(pctx, token, int32(size))
		cancel()
		if err != nil {
			return err
		}
		if len(page) > size {
			page = page[:size]
		}
		if err := show(page); err != nil {
			return err
		}
		shown += len(page)
		if next == "" || (c.limit > 0 && shown >= c.limit) {
			return nil
		}
		token = next
	}
}

// stream prints a listing as its pages arrive: a table whose columns widen
// as longer values come (the header is aligned with the first page), or a
// JSON array with one object per line.
type stream struct {
	c      *cli
	header []string
	widths []int
	n      int // records printed
}

func (c *cli) stream(header string) *stream {
	return &stream{c: c, header: strings.Split(header, "\t")}
}

// rows prints one page of table rows.
func (s *stream) rows(rows [][]string) error {
	if s.widths == nil {
		s.widths = make([]int, len(s.header))
		s.widen(s.header)
		for _, r := range rows {
			s.widen(r)
		}
		if err := s.line(s.header); err != nil {
			return err
		}
	}
	for _, r := range rows {
		s.widen(r)
		if err := s.line(r); err != nil {
			return err
		}
	}
	s.n += len(rows)
	return nil
}

func (s *stream) widen(r []string) {
	for i, v := range r {
		if i < len(s.widths) {
			s.widths[i] = max(s.widths[i], utf8.RuneCountInString(v))
		}
	}
}

func (s *stream) line(r []string) error {
	var b strings.Builder
	for i, v := range r {
		if i == len(r)-1 {
			b.WriteString(v)
			break
		}
		b.WriteString(v)
		b.WriteString(strings.Repeat(" ", s.widths[i]-utf8.RuneCountInString(v)+2))
	}
	b.WriteByte('\n')
	_, err := fmt.Fprint(s.c.out, b.String())
	return err
}

// msgs prints one page of records as JSON array elements.
func (s *stream) msgs(ms []proto.Message) error {
	for _, m := range ms {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			return err
		}
		sep := ",\n"
		if s.n == 0 {
			sep = "[\n"
		}
		if _, err := fmt.Fprintf(s.c.out, "%s  %s", sep, b); err != nil {
			return err
		}
		s.n++
	}
	return nil
}

// end finishes the listing: the header of an empty table, or the JSON array's end.
func (s *stream) end() error {
	if s.c.format == "json" {
		if s.n == 0 {
			_, err := fmt.Fprintln(s.c.out, "[]")
			return err
		}
		_, err := fmt.Fprint(s.c.out, "\n]\n")
		return err
	}
	if s.widths == nil {
		return s.rows(nil)
	}
	return nil
}
