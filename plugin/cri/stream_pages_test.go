package cri

import (
	"testing"

	"google.golang.org/grpc"
)

type pageStream struct {
	grpc.ServerStream
	pages [][]int
}

func (p *pageStream) Send(r *[]int) error {
	p.pages = append(p.pages, *r)
	return nil
}

func TestSendPages(t *testing.T) {
	for _, tc := range []struct{ items, pages, last int }{
		{0, 1, 0}, // an empty list is one empty message
		{1, 1, 1},
		{streamPageSize, 1, streamPageSize},
		{2*streamPageSize + 5, 3, 5},
	} {
		items := make([]int, tc.items)
		for i := range items {
			items[i] = i
		}
		s := &pageStream{}
		if err := sendPages(s, items, func(p []int) *[]int { return &p }); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range s.pages {
			for _, v := range p {
				if v != n {
					t.Fatalf("%d items: item %d sent as %d", tc.items, n, v)
				}
				n++
			}
		}
		if len(s.pages) != tc.pages || len(s.pages[len(s.pages)-1]) != tc.last || n != tc.items {
			t.Errorf("%d items: %d pages, last of %d, %d sent; want %d pages, last of %d", tc.items, len(s.pages), len(s.pages[len(s.pages)-1]), n, tc.pages, tc.last)
		}
	}
}
