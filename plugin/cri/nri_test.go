package cri

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A plugin's new memory limit carries memory+swap with it where the spec
// made them equal (no swap) or where it would end below the limit, which
// runc refuses; a swap it sets itself, or one unlimited, stays.
func TestMergeResourcesMemorySwap(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name                string
		limit, swap         int64
		newLimit, newSwap   *int64
		wantLimit, wantSwap int64
	}{
		{"raised, no swap", 1 << 30, 1 << 30, i64(3 << 29), nil, 3 << 29, 3 << 29},
		{"lowered, no swap", 1 << 30, 1 << 30, i64(1 << 29), nil, 1 << 29, 1 << 29},
		{"raised above the swap", 1 << 30, 3 << 29, i64(1 << 31), nil, 1 << 31, 1 << 31},
		{"raised below the swap", 1 << 30, 1 << 31, i64(3 << 29), nil, 3 << 29, 1 << 31},
		{"unlimited swap", 1 << 30, -1, i64(1 << 31), nil, 1 << 31, -1},
		{"swap set too", 1 << 30, 1 << 30, i64(1 << 31), i64(1 << 32), 1 << 31, 1 << 32},
	} {
		dst := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(tc.limit), Swap: i64(tc.swap)}}
		mergeResources(dst, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: tc.newLimit, Swap: tc.newSwap}})
		if *dst.Memory.Limit != tc.wantLimit || *dst.Memory.Swap != tc.wantSwap {
			t.Errorf("%s: limit %d swap %d, want %d %d", tc.name, *dst.Memory.Limit, *dst.Memory.Swap, tc.wantLimit, tc.wantSwap)
		}
	}
}
