package ids

import (
	"sort"
	"testing"
	"time"
)

func TestNewSortableOrdersByTime(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	var got []string
	for i := 0; i < 1000; i++ {
		got = append(got, NewSortable(t0.Add(time.Duration(i)*time.Millisecond)))
	}
	if !sort.StringsAreSorted(got) {
		t.Fatal("ids of later times do not sort after earlier ones")
	}
	seen := map[string]bool{}
	for _, id := range got {
		if len(id) != 22 || seen[id] || id[0] == '-' {
			t.Fatalf("id %q: wrong length, repeated, or starting with '-'", id)
		}
		seen[id] = true
		for _, c := range id {
			if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
				t.Fatalf("id %q is not URL-safe", id)
			}
		}
	}
}

// TestNewNeverLooksLikeAFlag: one id in 64 used to start with '-'; in
// 100,000 at least one would.
func TestNewNeverLooksLikeAFlag(t *testing.T) {
	seen := map[string]bool{}
	for range 100000 {
		id := New()
		if id[0] == '-' || len(id) != 22 {
			t.Fatalf("New() = %q", id)
		}
		seen[id] = true
	}
	if len(seen) != 100000 {
		t.Fatalf("%d distinct ids in 100,000", len(seen))
	}
}
