package cri

import (
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type pageStream struct {
	grpc.ServerStream
	pages [][]*runtimeapi.Container
}

func (p *pageStream) Send(r *[]*runtimeapi.Container) error {
	p.pages = append(p.pages, *r)
	return nil
}

func TestSendPages(t *testing.T) {
	big := strings.Repeat("x", 250<<10) // the most annotations an object may carry
	for _, tc := range []struct {
		name               string
		items, pages, last int
		annotation         string
	}{
		{"empty: one empty message", 0, 1, 0, ""},
		{"one", 1, 1, 1, ""},
		{"a full page", streamPageSize, 1, streamPageSize, ""},
		{"by count", 2*streamPageSize + 5, 3, 5, ""},
		{"by size", 20, 3, 4, big}, // 8 objects of 250 KiB fit in 2 MiB
	} {
		items := make([]*runtimeapi.Container, tc.items)
		for i := range items {
			items[i] = &runtimeapi.Container{Id: strconv.Itoa(i), Annotations: map[string]string{"a": tc.annotation}}
		}
		s := &pageStream{}
		if err := sendPages(s, items, func(p []*runtimeapi.Container) *[]*runtimeapi.Container { return &p }); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range s.pages {
			for _, v := range p {
				if v.Id != strconv.Itoa(n) {
					t.Fatalf("%s: item %d sent as %s", tc.name, n, v.Id)
				}
				n++
			}
		}
		if len(s.pages) != tc.pages || len(s.pages[len(s.pages)-1]) != tc.last || n != tc.items {
			t.Errorf("%s: %d pages, last of %d, %d sent; want %d pages, last of %d", tc.name, len(s.pages), len(s.pages[len(s.pages)-1]), n, tc.pages, tc.last)
		}
	}
}
