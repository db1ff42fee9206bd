package httpapi

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strings"
	"sync"

	"github.com/valyala/fastjson"
)

// JSON member names are case-sensitive, but encoding/json also matches a
// member to a field whose name differs only in case: it would take
// {"LOGIN": …} for the login. API.md has unknown fields ignored, so
// withoutCaseVariants drops every member that is not a field of the target
// type by its exact name but is one by a case-insensitive match, before
// encoding/json sees the body. Members of unknown names stay (encoding/json
// ignores them anyway), and so does everything under a field decoded by
// its own method or into an untyped value.

var (
	parsers     fastjson.ParserPool
	fieldsCache sync.Map // reflect.Type → map[string]reflect.Type
)

// withoutCaseVariants returns body without the members that only a
// case-insensitive match would give to a field of t (what v's pointer
// points to), or body itself when there are none (or when fastjson cannot
// parse it: then encoding/json reports the error).
func withoutCaseVariants(body []byte, t reflect.Type) []byte {
	p := parsers.Get()
	defer parsers.Put(p)
	root, err := p.ParseBytes(body)
	if err != nil {
		return body
	}
	if !dropCaseVariants(root, t) {
		return body
	}
	return root.MarshalTo(nil)
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// dropCaseVariants removes from v the members described above, for a
// value of type t, and reports whether it removed any.
func dropCaseVariants(v *fastjson.Value, t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return false
	}
	changed := false
	switch t.Kind() {
	case reflect.Struct:
		obj, err := v.Object()
		if err != nil {
			return false
		}
		fields := fieldsOf(t)
		var drop []string
		obj.Visit(func(key []byte, mv *fastjson.Value) {
			if ft, ok := fields[string(key)]; ok {
				changed = dropCaseVariants(mv, ft) || changed
				return
			}
			for name := range fields {
				if strings.EqualFold(name, string(key)) {
					drop = append(drop, string(key))
					return
				}
			}
		})
		for _, k := range drop {
			obj.Del(k)
		}
		changed = changed || len(drop) > 0
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return false // []byte: base64
		}
		arr, err := v.Array()
		if err != nil {
			return false
		}
		for _, e := range arr {
			changed = dropCaseVariants(e, t.Elem()) || changed
		}
	case reflect.Map:
		obj, err := v.Object()
		if err != nil {
			return false
		}
		obj.Visit(func(_ []byte, mv *fastjson.Value) {
			changed = dropCaseVariants(mv, t.Elem()) || changed
		})
	}
	return changed
}

// fieldsOf returns the JSON names of the fields of struct type t, with
// their types, as encoding/json names them (promoted fields of embedded
// structs included).
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldsCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	fields := map[string]reflect.Type{}
	for _, sf := range reflect.VisibleFields(t) {
		if !sf.IsExported() && !sf.Anonymous {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" {
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				continue // its fields are visible fields of t
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if len(sf.Index) > 1 {
			if _, taken := fields[name]; taken {
				continue // the shallower field wins
			}
		}
		fields[name] = sf.Type
	}
	fieldsCache.Store(t, fields)
	return fields
}
