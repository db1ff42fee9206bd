package proto

import (
	"bytes"
	"sync"

	"github.com/valyala/fastjson"
)

// fastObject is the [frameObject] parsed by fastjson, in a single pass and
// with far fewer allocations than encoding/json. It comes with its parser
// from a pool and must be given back with release; what its methods return
// is copied out of the parser's memory, so it stays valid after that.
//
// fastjson differs from encoding/json in ways that fastObject papers over
// so that the results are identical:
//
//   - Its parser accepts invalid JSON (NaN, "1-2", raw control characters,
//     unknown escapes), so the data must also pass fastjson.Validate, which
//     is no more lenient than encoding/json.
//   - It decodes unpaired UTF-16 surrogate escapes differently
//     (encoding/json turns each into U+FFFD), so data with any surrogate
//     escape is left to encoding/json.
//   - It allows 300 levels of nesting, encoding/json 10000, and its error
//     messages differ: data that it rejects goes to encoding/json, which
//     either accepts it or gives the error message.
//   - Object.Get returns the first of duplicate names, so members are
//     collected with Visit, the last occurrence winning.
type fastObject struct {
	p fastjson.Parser
	// members holds the values of the members that decodeFrame reads, by
	// memberIndex; nil for a missing member.
	members [numMembers]*fastjson.Value
	// pooled reports whether release puts the fastObject back into the
	// pool.
	pooled bool
}

// Indexes of fastObject.members.
const (
	memberRef = iota
	memberType
	memberToken
	memberConversation
	memberClientID
	memberCiphertext
	memberKeys
	memberAttachments
	memberCursors
	numMembers
)

// memberIndex returns the index in fastObject.members of the member name,
// or -1 if decodeFrame does not read it.
func memberIndex(name string) int {
	switch name {
	case "ref":
		return memberRef
	case "type":
		return memberType
	case "token":
		return memberToken
	case "conversation":
		return memberConversation
	case "client_id":
		return memberClientID
	case "ciphertext":
		return memberCiphertext
	case "keys":
		return memberKeys
	case "attachments":
		return memberAttachments
	case "cursors":
		return memberCursors
	}
	return -1
}

// maxPooledData is the size of the largest data whose fastObject goes back
// into the pool. The parser keeps a copy of the data and a value for every
// JSON value in it, so larger (rare) frames and bodies get a fastObject of
// their own that the garbage collector reclaims. It covers every send with
// a ciphertext of MaxCiphertextSize and a hundred keys.
const maxPooledData = 128 << 10

var fastObjects = sync.Pool{New: func() any { return new(fastObject) }}

// parseFast parses data, which checkObject accepted, with fastjson. It
// returns nil if it cannot guarantee the results of encoding/json: if data
// holds a surrogate escape, or fastjson rejects it. Otherwise the caller
// must call release on the result when done with it.
func parseFast(data []byte) *fastObject {
	if hasSurrogateEscape(data) {
		return nil
	}
	var o *fastObject
	if len(data) <= maxPooledData {
		o = fastObjects.Get().(*fastObject)
		o.pooled = true
	} else {
		o = new(fastObject)
	}
	if !o.parse(data) {
		o.release()
		return nil
	}
	return o
}

// parse parses data into o.members. It reports whether data is valid JSON
// of at most fastjson.MaxDepth levels and an object.
func (o *fastObject) parse(data []byte) bool {
	// Parse first: unlike Validate, it limits the nesting depth, and so
	// the recursion of Validate after it.
	v, err := o.p.ParseBytes(data)
	if err != nil || fastjson.ValidateBytes(data) != nil {
		return false
	}
	obj, err := v.Object()
	if err != nil {
		return false
	}
	obj.Visit(func(name []byte, v *fastjson.Value) {
		if i := memberIndex(string(name)); i >= 0 {
			o.members[i] = v
		}
	})
	return true
}

// release gives o back to the pool if it came from there. o must not be
// used afterwards.
func (o *fastObject) release() {
	o.members = [numMembers]*fastjson.Value{}
	if o.pooled {
		fastObjects.Put(o)
	}
}

// hasSurrogateEscape reports whether the JSON text data may hold a \u
// escape of a UTF-16 surrogate (U+D800 to U+DFFF). It skips over every
// escape, so that an escaped backslash followed by "ud800" does not count.
func hasSurrogateEscape(data []byte) bool {
	for {
		i := bytes.IndexByte(data, '\\')
		if i < 0 || i+1 >= len(data) {
			return false
		}
		if data[i+1] == 'u' && i+3 < len(data) && data[i+2]|0x20 == 'd' && isHexAbove7(data[i+3]) {
			return true
		}
		data = data[i+2:]
	}
}

// isHexAbove7 reports whether c is one of the hex digits 8 to f, in either
// case.
func isHexAbove7(c byte) bool {
	return c == '8' || c == '9' || 'a' <= c|0x20 && c|0x20 <= 'f'
}

// member returns the value of member i, or nil if it is missing or null.
func (o *fastObject) member(i int) *fastjson.Value {
	v := o.members[i]
	if v == nil || v.Type() == fastjson.TypeNull {
		return nil
	}
	return v
}

// stringBytes returns the contents of the JSON string v. ok is false if v
// is not a string. The result aliases the parser's memory.
func stringBytes(v *fastjson.Value) (b []byte, ok bool) {
	if v.Type() != fastjson.TypeString {
		return nil, false
	}
	return v.GetStringBytes(), true
}

func (o *fastObject) stringMember(name string) (s string, ok bool, err *Error) {
	v := o.member(memberIndex(name))
	if v == nil {
		return "", false, nil
	}
	b, ok := stringBytes(v)
	if !ok {
		return "", false, errNotString(name)
	}
	return string(b), true, nil
}

func (o *fastObject) base64Member(name, what string, max int) ([]byte, *Error) {
	v := o.member(memberIndex(name))
	if v == nil {
		return nil, nil
	}
	return valueBase64(v, what, max)
}

// valueBase64 decodes the JSON string v with decodeBase64.
func valueBase64(v *fastjson.Value, what string, max int) ([]byte, *Error) {
	enc, ok := stringBytes(v)
	if !ok {
		return nil, errNotBase64String(what)
	}
	return decodeBase64(enc, what, max)
}

func (o *fastObject) keys() (map[string][]byte, *Error) {
	v := o.member(memberKeys)
	if v == nil {
		return nil, nil
	}
	obj, err := v.Object()
	if err != nil {
		return nil, errNotObject("keys")
	}
	return decodeEntries(obj, MaxKeys, errTooManyKeys, func(_ []byte, v *fastjson.Value) ([]byte, *Error) {
		// No size limit here: Validate reports invalid entries first.
		return valueBase64(v, "wrapped key", 0)
	})
}

func (o *fastObject) attachments() ([]string, *Error) {
	v := o.member(memberAttachments)
	if v == nil {
		return nil, nil
	}
	elems, err := v.Array()
	if err != nil {
		return nil, errNotArray("attachments")
	}
	if len(elems) > MaxAttachments {
		return nil, errTooManyAttachments()
	}
	if len(elems) == 0 {
		return nil, nil
	}
	ids := make([]string, len(elems))
	for i, e := range elems {
		b, ok := stringBytes(e)
		if !ok {
			return nil, errAttachmentNotString()
		}
		ids[i] = string(b)
	}
	return ids, nil
}

func (o *fastObject) cursors() (map[string]uint64, *Error) {
	v := o.member(memberCursors)
	if v == nil {
		return nil, nil
	}
	obj, err := v.Object()
	if err != nil {
		return nil, errNotObject("cursors")
	}
	return decodeEntries(obj, MaxCursors, errTooManyCursors, cursor)
}

// cursor decodes the value v of the cursor for the conversation id.
func cursor(id []byte, v *fastjson.Value) (uint64, *Error) {
	if len(id) == 0 || len(id) > MaxIDLen {
		return 0, errCursorID()
	}
	var num []byte
	if v.Type() == fastjson.TypeNumber {
		var buf [24]byte
		num = v.MarshalTo(buf[:0]) // the number as written
	}
	n, ok := parseUint(num)
	if !ok {
		return 0, errCursorValue(string(id))
	}
	return n, nil
}

// decodeEntries decodes the members of obj with decode into a map, as
// encoding/json decoding into a map followed by a loop over it would: of
// duplicate names the last occurrence wins and only its value must be
// valid, and more than max distinct names give tooMany, whatever the
// values. If several entries are invalid, which one is reported is
// unspecified.
func decodeEntries[T any](obj *fastjson.Object, max int, tooMany func() *Error,
	decode func(name []byte, v *fastjson.Value) (T, *Error)) (map[string]T, *Error) {
	m := make(map[string]T, min(obj.Len(), max))
	var invalid map[string]*Error // by name, if the latest value is invalid
	obj.Visit(func(name []byte, v *fastjson.Value) {
		x, err := decode(name, v)
		m[string(name)] = x
		if err != nil {
			if invalid == nil {
				invalid = make(map[string]*Error)
			}
			invalid[string(name)] = err
		} else {
			delete(invalid, string(name))
		}
	})
	if len(m) > max {
		return nil, tooMany()
	}
	for _, err := range invalid {
		return nil, err
	}
	return m, nil
}
