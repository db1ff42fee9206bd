package main

import (
	"slices"
	"testing"
)

func TestWithGODEBUG(t *testing.T) {
	settings := []string{"gcshrinkstackoff=1", "b=2"}
	for _, c := range []struct {
		name    string
		env     []string
		want    []string
		changed bool
	}{
		{"none", []string{"A=1"}, []string{"A=1", "GODEBUG=gcshrinkstackoff=1,b=2"}, true},
		{"others kept", []string{"GODEBUG=gctrace=1", "A=1"}, []string{"A=1", "GODEBUG=gctrace=1,gcshrinkstackoff=1,b=2"}, true},
		{"operator's value wins", []string{"GODEBUG=gcshrinkstackoff=0"}, []string{"GODEBUG=gcshrinkstackoff=0,b=2"}, true},
		{"all named", []string{"GODEBUG=b=0, gcshrinkstackoff=0", "A=1"}, []string{"GODEBUG=b=0, gcshrinkstackoff=0", "A=1"}, false},
		{"first GODEBUG counts", []string{"GODEBUG=b=1", "GODEBUG=x=1"}, []string{"GODEBUG=b=1,gcshrinkstackoff=1"}, true},
		{"empty", []string{"GODEBUG="}, []string{"GODEBUG=gcshrinkstackoff=1,b=2"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, changed := withGODEBUG(c.env, settings)
			if changed != c.changed || !slices.Equal(got, c.want) {
				t.Errorf("withGODEBUG(%q) = %q, %v; want %q, %v", c.env, got, changed, c.want, c.changed)
			}
		})
	}
}
