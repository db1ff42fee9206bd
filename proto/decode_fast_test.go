package proto

import (
	"bytes"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// decodeClientFrameJSON is DecodeClientFrame with encoding/json only: the
// reference that the fastjson path must match.
func decodeClientFrameJSON(data []byte) (ClientFrame, *Error) {
	if len(data) > MaxFrameSize {
		return ClientFrame{}, Errorf(CodePayloadTooLarge, "frame exceeds %d bytes", MaxFrameSize)
	}
	if err := checkObject(data); err != nil {
		return ClientFrame{}, err
	}
	obj, err := parseJSON(data)
	if err != nil {
		return ClientFrame{}, err
	}
	return decodeFrame(obj)
}

// decodeSendJSON is DecodeSend with encoding/json only.
func decodeSendJSON(data []byte) (*Send, *Error) {
	if err := checkObject(data); err != nil {
		return nil, err
	}
	obj, err := parseJSON(data)
	if err != nil {
		return nil, err
	}
	return decodeSendBody(obj)
}

// usesFast reports whether DecodeClientFrame decodes data with fastjson.
func usesFast(data []byte) bool {
	if len(data) > MaxFrameSize || checkObject(data) != nil {
		return false
	}
	o := parseFast(data)
	if o == nil {
		return false
	}
	o.release()
	return true
}

// quoted matches the quoted names in error messages (see quoteShort).
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"…?`)

// entryErrors groups the error messages about single entries of keys or
// cursors, with quoted names replaced by "…". When several entries are
// invalid, which one is reported depends on map iteration order, in the
// old decoder as in this one: any message of the group may come.
var entryErrors = map[string]int{
	fmt.Sprintf("cursor conversation ids must be 1 to %d bytes", MaxIDLen): 1,
	`cursor for "…" is not a non-negative integer`:                         1,
	"wrapped key must be a base64 string":                                  2,
	"wrapped key is not standard padded base64":                            2,
	`key name "…" is not "…"`:                                              3,
	`wrapped key for "…" is empty`:                                         3,
}

// sameError reports whether a and b are the same error, up to the choice
// among several invalid map entries.
func sameError(a, b *Error) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Code != b.Code {
		return false
	}
	am := quoted.ReplaceAllString(a.Message, `"…"`)
	bm := quoted.ReplaceAllString(b.Message, `"…"`)
	return a.Message == b.Message || am == bm || entryErrors[am] != 0 && entryErrors[am] == entryErrors[bm]
}

// checkSameAsJSON fails t unless DecodeClientFrame and DecodeSend give the
// same results for data as their encoding/json-only references.
func checkSameAsJSON(t *testing.T, data []byte) {
	t.Helper()
	got, err := DecodeClientFrame(data)
	want, wantErr := decodeClientFrameJSON(data)
	if !reflect.DeepEqual(got, want) || !sameError(err, wantErr) {
		t.Fatalf("DecodeClientFrame(%q)\n = %+v, %v\nencoding/json: %+v, %v", data, got, err, want, wantErr)
	}
	if got.Send != nil && !reflect.DeepEqual(*got.Send, *want.Send) {
		t.Fatalf("DecodeClientFrame(%q) send\n = %+v\nencoding/json: %+v", data, *got.Send, *want.Send)
	}
	s, err := DecodeSend(data)
	wantS, wantErr := decodeSendJSON(data)
	if !reflect.DeepEqual(s, wantS) || !sameError(err, wantErr) {
		t.Fatalf("DecodeSend(%q)\n = %+v, %v\nencoding/json: %+v, %v", data, s, err, wantS, wantErr)
	}
}

// nested returns a ping frame with an "x" member nested depth levels deep.
func nested(depth int) string {
	return `{"type":"ping","x":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
}

// duplicateKeys returns n keys entries of which the last two share a name.
func duplicateKeys(n int) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i := range n - 1 {
		fmt.Fprintf(&sb, `"u%d/d":"aw==",`, i)
	}
	sb.WriteString(`"u0/d":"aw=="}`)
	return sb.String()
}

// duplicateCursors returns n cursors of which the last two share an id.
func duplicateCursors(n int) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i := range n - 1 {
		fmt.Fprintf(&sb, `"c%d":%d,`, i, i)
	}
	sb.WriteString(`"c0":7}`)
	return sb.String()
}

func sendWith(members string) string {
	return `{"type":"send","conversation":"c","client_id":"k","ciphertext":"aGk=","keys":{"u/d":"aw=="}` + members + `}`
}

func sendWithKeys(keys string) string {
	return `{"type":"send","conversation":"c","client_id":"k","ciphertext":"aGk=","keys":` + keys + `}`
}

// TestDecodeFastMatchesJSON checks the fastjson path against encoding/json
// where the two libraries differ, and which inputs fall back to
// encoding/json.
func TestDecodeFastMatchesJSON(t *testing.T) {
	tests := map[string]struct {
		frame string
		fast  bool // decoded with fastjson
	}{
		"send":                  {frame: sendFrame(nil), fast: true},
		"bench send":            {frame: string(benchSendFrame()), fast: true},
		"ping":                  {frame: "\t\r\n {\"type\":\"ping\"} \n", fast: true},
		"last duplicate wins":   {frame: `{"type":"send","type":"ping","ref":"a","ref":null}`, fast: true},
		"duplicate null wins":   {frame: `{"type":"ping","type":null}`, fast: true},
		"escaped member name":   {frame: `{"\u0074ype":"ping","r\u0065f":"x"}`, fast: true},
		"empty member name":     {frame: `{"":1,"type":"ping"}`, fast: true},
		"escapes":               {frame: `{"type":"ping","ref":"a\"b\\c\/d\b\f\n\r\t\u00e9\u0000\u20AC\uFFFF"}`, fast: true},
		"escaped backslash ud8": {frame: `{"type":"ping","ref":"\\ud800\\uDC00"}`, fast: true},
		"raw non-ASCII":         {frame: `{"type":"ping","ref":"äö€😀` + "\u2028\x7f" + `"}`, fast: true},
		"surrogate pair":        {frame: `{"type":"ping","ref":"\ud83d\ude00"}`},
		"lone high surrogate":   {frame: `{"type":"ping","ref":"a\ud800b"}`},
		"high surrogate at end": {frame: `{"type":"ping","ref":"\uD800"}`},
		"high then non-low":     {frame: `{"type":"ping","ref":"\ud800\u0041"}`},
		"high then high":        {frame: `{"type":"ping","ref":"\ud800\ud800\udc00"}`},
		"lone low surrogate":    {frame: `{"type":"ping","ref":"\udc00\u0041"}`},
		"surrogate in name":     {frame: `{"type":"ping","\ud800":1}`},
		"surrogate in key name": {frame: sendWithKeys(`{"u/\ud800":"aw=="}`)},
		"escaped key name":      {frame: sendWithKeys(`{"u\/d":"aw==","\u0075/e":"aw=="}`), fast: true},
		"escaped ciphertext":    {frame: `{"type":"send","conversation":"c","client_id":"k","ciphertext":"a\u0047k=","keys":{"u/d":"aw=="}}`, fast: true},
		"escaped CR in base64":  {frame: `{"type":"send","conversation":"c","client_id":"k","ciphertext":"aG\rk=","keys":{"u/d":"aw=="}}`, fast: true},
		"base64 with \\u000a":   {frame: `{"type":"send","conversation":"c","client_id":"k","ciphertext":"aG\u000ak=","keys":{"u/d":"aw=="}}`, fast: true},

		"duplicate key, earlier invalid":    {frame: sendWithKeys(`{"u/d":1,"u/d":"aw=="}`), fast: true},
		"duplicate key, later invalid":      {frame: sendWithKeys(`{"u/d":"aw==","u/d":1}`), fast: true},
		"duplicate key, later null":         {frame: sendWithKeys(`{"u/d":"aw==","u/d":null}`), fast: true},
		"duplicate key, invalid then bad":   {frame: sendWithKeys(`{"u/d":1,"v/d":"aw==","u/d":"a"}`), fast: true},
		"MaxKeys+1 entries, one duplicate":  {frame: sendWithKeys(duplicateKeys(MaxKeys + 1)), fast: true},
		"MaxKeys+2 entries, one duplicate":  {frame: sendWithKeys(duplicateKeys(MaxKeys + 2)), fast: true},
		"too many keys beats invalid value": {frame: sendWithKeys(strings.Replace(duplicateKeys(MaxKeys+2), `"aw=="`, `5`, 1)), fast: true},
		"empty keys":                        {frame: sendWithKeys(`{}`), fast: true},
		"key value null":                    {frame: sendWithKeys(`{"u/d":null}`), fast: true},
		"key value empty":                   {frame: sendWithKeys(`{"u/d":""}`), fast: true},
		"attachments":                       {frame: sendWith(`,"attachments":["a","\u0062"]`), fast: true},
		"attachments null":                  {frame: sendWith(`,"attachments":null`), fast: true},
		"attachment null":                   {frame: sendWith(`,"attachments":[null]`), fast: true},
		"attachments empty":                 {frame: sendWith(`,"attachments":[]`), fast: true},
		"attachments duplicate":             {frame: sendWith(`,"attachments":["a","a"]`), fast: true},
		"attachments too many and invalid":  {frame: sendWith(`,"attachments":[` + strings.Repeat(`1,`, MaxAttachments) + `1]`), fast: true},
		"conversation null":                 {frame: sendWith(`,"conversation":null`), fast: true},
		"ciphertext object":                 {frame: sendWith(`,"ciphertext":{}`), fast: true},
		"ciphertext too long":               {frame: sendWith(`,"ciphertext":"` + strings.Repeat("A", 87384) + `"`), fast: true},

		"cursors":                         {frame: syncFrame(`{"c1":0,"c2":17,"c3":18446744073709551615}`), fast: true},
		"cursor duplicate earlier bad":    {frame: syncFrame(`{"c1":"x","c1":1}`), fast: true},
		"cursor duplicate later bad":      {frame: syncFrame(`{"c1":1,"c1":-1}`), fast: true},
		"cursor long number":              {frame: syncFrame(`{"c1":123456789012345678901234567890}`), fast: true},
		"cursor overflow":                 {frame: syncFrame(`{"c1":18446744073709551616}`), fast: true},
		"cursor fraction":                 {frame: syncFrame(`{"c1":1.0}`), fast: true},
		"cursor exponent":                 {frame: syncFrame(`{"c1":1E2}`), fast: true},
		"cursor minus zero":               {frame: syncFrame(`{"c1":-0}`), fast: true},
		"cursor null":                     {frame: syncFrame(`{"c1":null}`), fast: true},
		"cursor id empty":                 {frame: syncFrame(`{"":1}`), fast: true},
		"cursor escaped id":               {frame: syncFrame(`{"c\u0031":1}`), fast: true},
		"MaxCursors+1, one duplicate":     {frame: syncFrame(duplicateCursors(MaxCursors + 1)), fast: true},
		"MaxCursors+2, one duplicate":     {frame: syncFrame(duplicateCursors(MaxCursors + 2)), fast: true},
		"cursors empty":                   {frame: syncFrame(`{}`), fast: true},
		"cursors array":                   {frame: syncFrame(`[]`), fast: true},
		"auth":                            {frame: `{"type":"auth","token":"t\u006fk"}`, fast: true},
		"unknown type with long name":     {frame: `{"type":"` + strings.Repeat("\\n", 100) + `"}`, fast: true},
		"nested 299":                      {frame: nested(299), fast: true},
		"nested 300":                      {frame: nested(300)},
		"nested 1000":                     {frame: nested(1000)},
		"nested 10001":                    {frame: nested(10001)},
		"largest send":                    {frame: string(AppendSendFrame(nil, "r", &Send{Conversation: "c", ClientID: "k", Ciphertext: make([]byte, MaxCiphertextSize), Keys: manyKeysBytes(MaxKeys)})), fast: true},
		"unused members of any JSON type": {frame: `{"type":"ping","a":[1,-2.5e+3,true,false,null,{"b":{}},[],""]}`, fast: true},

		// Invalid JSON that fastjson's parser alone would accept.
		"NaN":                {frame: `{"type":"ping","x":NaN}`},
		"nan":                {frame: `{"type":"ping","x":nan}`},
		"Inf":                {frame: `{"type":"ping","x":-Inf}`},
		"plus":               {frame: `{"type":"ping","x":+1}`},
		"1-2":                {frame: `{"type":"ping","x":1-2}`},
		"leading zero":       {frame: `{"type":"ping","x":01}`},
		"trailing dot":       {frame: `{"type":"ping","x":1.}`},
		"leading dot":        {frame: `{"type":"ping","x":.5}`},
		"bare exponent":      {frame: `{"type":"ping","x":1e}`},
		"minus":              {frame: `{"type":"ping","x":-}`},
		"control in string":  {frame: "{\"type\":\"ping\",\"x\":\"a\x01\"}"},
		"tab in string":      {frame: "{\"type\":\"ping\",\"x\":\"a\tb\"}"},
		"control in name":    {frame: "{\"type\":\"ping\",\"\x1f\":1}"},
		"unknown escape":     {frame: `{"type":"ping","x":"\x"}`},
		"short \\u":          {frame: `{"type":"ping","x":"\u12"}`},
		"bad hex \\u":        {frame: `{"type":"ping","x":"\u12G4"}`},
		"\\u with sign":      {frame: `{"type":"ping","x":"\u+123"}`},
		"escaped name bad":   {frame: `{"type":"ping","\q":1}`},
		"trailing comma":     {frame: `{"type":"ping",}`},
		"array comma":        {frame: `{"type":"ping","x":[1,]}`},
		"missing comma":      {frame: `{"type":"ping" "x":1}`},
		"single quotes":      {frame: `{'type':'ping'}`},
		"form feed":          {frame: "{\"type\":\"ping\"}\f"},
		"NBSP":               {frame: "{\"type\":\"ping\"}\u00a0"},
		"two objects":        {frame: `{"type":"ping"}{}`},
		"truncated":          {frame: `{"type":"ping"`},
		"truncated string":   {frame: `{"type":"ping","x":"abc\"}`},
		"tru":                {frame: `{"type":"ping","x":tru}`},
		"nulls":              {frame: `{"type":"ping","x":nulls}`},
		"unquoted name":      {frame: `{type:"ping"}`},
		"invalid UTF-8":      {frame: "{\"type\":\"ping\",\"x\":\"\xc3\"}"},
		"encoded surrogate":  {frame: "{\"type\":\"ping\",\"x\":\"\xed\xa0\x80\"}"},
		"byte order mark":    {frame: "\ufeff{\"type\":\"ping\"}"},
		"top-level array":    {frame: `[]`},
		"empty":              {frame: ``},
		"frame too large":    {frame: `{"type":"ping","x":"` + strings.Repeat("x", MaxFrameSize) + `"}`},
		"nested unbalanced":  {frame: `{"type":"ping","x":[[[}`},
		"deep and malformed": {frame: nested(400)[:500]},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			data := []byte(tc.frame)
			if got := usesFast(data); got != tc.fast {
				t.Errorf("decoded with fastjson: %v, want %v", got, tc.fast)
			}
			checkSameAsJSON(t, data)
		})
	}
}

// manyKeysBytes returns n wrapped keys of MaxWrappedKeySize bytes.
func manyKeysBytes(n int) map[string][]byte {
	keys := make(map[string][]byte, n)
	for i := range n {
		keys[fmt.Sprintf("u%d/d", i)] = make([]byte, MaxWrappedKeySize)
	}
	return keys
}

// TestDecodeDoesNotAlias checks that decoded frames share no memory with
// the data or with the pooled parser, which decodes further frames.
func TestDecodeDoesNotAlias(t *testing.T) {
	frames := []string{
		sendWith(`,"ref":"r\u0031","attachments":["a\u0031","b"]`),
		sendWithKeys(`{"u\/d":"aGk=","v/d":"aGk="}`),
		syncFrame(`{"c\u0031":1,"c2":2}`),
		`{"type":"auth","token":"t\u006fken"}`,
	}
	for _, frame := range frames {
		data := []byte(frame)
		got, err := DecodeClientFrame(data)
		if err != nil {
			t.Fatalf("DecodeClientFrame(%s): %v", frame, err)
		}
		want, _ := decodeClientFrameJSON([]byte(frame))
		// Overwrite the data, and the parser's memory by decoding other
		// frames of the same size.
		for i := range data {
			data[i] = ' '
		}
		for range 10 {
			other := []byte(strings.Map(func(r rune) rune {
				if r >= 'a' && r <= 'z' {
					return 'z' - (r - 'a')
				}
				return r
			}, frame))
			DecodeClientFrame(other)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("frame %s changed after decoding others: %+v, want %+v", frame, got, want)
		}
	}
}

// TestDecodeSendFastMatchesJSON checks DecodeSend bodies, which may exceed
// MaxFrameSize and then skip the parser pool.
func TestDecodeSendFastMatchesJSON(t *testing.T) {
	body := `{"client_id":"k","conversation":"ignored","ciphertext":"aGk=","keys":{"u/d":"aw=="},"pad":"` +
		strings.Repeat("x", MaxFrameSize) + `"}`
	for _, b := range []string{body, body[:len(body)/2], `{"client_id":"k\u0031","ciphertext":"aGk=","keys":{"u/d":"aw=="}}`} {
		checkSameAsJSON(t, []byte(b))
	}
	s, err := DecodeSend([]byte(body))
	if err != nil || s.ClientID != "k" || !bytes.Equal(s.Ciphertext, []byte("hi")) {
		t.Errorf("DecodeSend of a large body = %+v, %v", s, err)
	}
}

func TestHasSurrogateEscape(t *testing.T) {
	tests := map[string]bool{
		``:               false,
		`\`:              false,
		`\u`:             false,
		`\ud8`:           true,
		`\uD8`:           true,
		`\ud7ff`:         false,
		`\ue000`:         false,
		`"\udfff"`:       true,
		`"\uDC00"`:       true,
		`"\ud`:           false,
		`\\ud800`:        false,
		`\\\ud800`:       true,
		`\\\\ud800`:      false,
		`"a\"\ud800"`:    true,
		`"\n\t\u0041\\"`: false,
	}
	for in, want := range tests {
		if got := hasSurrogateEscape([]byte(in)); got != want {
			t.Errorf("hasSurrogateEscape(%s) = %v, want %v", in, got, want)
		}
	}
}

// FuzzFastMatchesJSON checks that DecodeClientFrame and DecodeSend, which
// use fastjson where they can, give the same results as encoding/json.
// (Its name must not contain FuzzDecodeClientFrame: make fuzz selects that
// target by regular expression.)
func FuzzFastMatchesJSON(f *testing.F) {
	seeds := []string{
		sendFrame(nil),
		string(benchSendFrame()),
		sendWithKeys(`{"u/d":1,"u/d":"aw==","v\/w":"aw=="}`),
		sendWith(`,"attachments":["a",null],"ref":"\ud800x"`),
		syncFrame(`{"c1":"x","c1":1,"c2":1e2,"":3}`),
		`{"type":"auth","token":"t\u006fk","type":"auth"}`,
		`{"type":"ping","x":[NaN,-Inf,01,1.,"\x","a` + "\x01" + `"]}`,
		`{"type":"ping","ref":"\\ud800\ud83d\ude00"}`,
		nested(299),
		nested(301),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkSameAsJSON)
}
