package proto

import (
	"strings"
	"testing"
)

func TestContainsControl(t *testing.T) {
	for s, want := range map[string]bool{
		"Frau Meyer":           false,
		"Jürgen Ölçü":          false,
		"محمد":                 false,
		"שלום \u200f":          false, // a right-to-left mark is no override
		"a\x01b":               true,
		"tab\there":            true,
		"del\x7f":              true,
		"c1\u0085":             true,
		"evil\u202egnp.exe":    true, // right-to-left override
		"\u202aembedded\u202c": true,
		"iso\u2066late\u2069":  true,
		"\u2069":               true,
	} {
		if got := ContainsControl(s); got != want {
			t.Errorf("ContainsControl(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestValidName(t *testing.T) {
	for s, want := range map[string]bool{
		"Klasse 7b":               true,
		strings.Repeat("ö", 200):  true,
		strings.Repeat("ö", 201):  false,
		"":                        false,
		"Admin\u202e":             false,
		"line\nbreak":             false,
		string([]byte{0xff, 'a'}): false,
	} {
		if got := ValidName(s, 200); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
}
