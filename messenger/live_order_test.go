package messenger_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"klassenfunk/proto"
	"klassenfunk/storage"
)

// TestLiveOrderWithAttachments posts messages with an attachment (from
// one device) beside plain ones (from another device of the same user) to
// a group at the same time, and checks that a member's open socket gets
// every seq live, in order, none missing. A message with attachments is
// stored in two steps; a plain one posted after it could be published
// first, and the socket, finding no earlier message to fill the gap with,
// dropped that one when it came.
func TestLiveOrderWithAttachments(t *testing.T) {
	w := newHTTPWorld(t)
	tina, tom := w.u["tina"], w.u["tom"]
	tablet, _ := w.env.Login("tina", "tina-tablet", true)
	g := w.group(tina.tok, "Fachschaft", httpMember(tom.id, true))
	ws := w.env.Dial(tom.tok) // after ready

	const rounds, plain = 20, 3
	keys := []string{tina.key(), tina.id + "/tina-tablet", tom.key()}
	atts := make([]string, rounds)
	for r := range atts {
		atts[r] = w.mustUpload(tina.tok, fmt.Appendf(nil, "file %d", r))
	}
	statuses := make(chan int, rounds*(plain+1))
	for r := range rounds {
		var wg sync.WaitGroup
		wg.Go(func() {
			statuses <- w.env.Do("POST", "/api/v1/conversations/"+g+"/messages", tina.tok, httpMsg(fmt.Sprintf("a%d", r), "with a file", keys, atts[r])).Status
		})
		for i := range plain {
			wg.Go(func() {
				statuses <- w.env.Do("POST", "/api/v1/conversations/"+g+"/messages", tablet, httpMsg(fmt.Sprintf("p%d-%d", r, i), "plain", keys)).Status
			})
		}
		wg.Wait()
	}
	close(statuses)
	for s := range statuses {
		if s != http.StatusCreated {
			t.Fatalf("POST answered %d, want 201", s)
		}
	}
	for want := uint64(1); want <= rounds*(plain+1); want++ {
		f, skipped := ws.ReadType(proto.TypeMessage)
		if len(skipped) > 0 || f.Message == nil {
			t.Fatalf("live frame %+v (after %d other frames), want a message", f, len(skipped))
		}
		if f.Message.Seq != want {
			t.Fatalf("live message of seq %d, want seq %d (earlier ones lost)", f.Message.Seq, want)
		}
	}
}

// TestLiveOrderWideGroup: in a group of more users than the publisher
// writes to itself (inlineFanout), live messages go through each
// socket's queue and writer, and still arrive in seq order, as in a
// small group where the publisher writes them.
func TestLiveOrderWideGroup(t *testing.T) {
	w := newHTTPWorld(t)
	tina, tom, sam := w.u["tina"], w.u["tom"], w.u["sam"]
	members := []storage.Member{httpMember(tom.id, true), httpMember(sam.id, false)}
	for i := range 70 {
		members = append(members, httpMember(w.env.CreateUser(tina.school, fmt.Sprintf("kind%02d", i), "student"), false))
	}
	wide := w.group(tina.tok, "Schulversammlung", members...)
	small := w.group(tina.tok, "Fachschaft", httpMember(tom.id, true))
	ws := w.env.Dial(tom.tok)
	keys := []string{tina.key(), tom.key()}
	var want []string
	for i := range 20 {
		conv := wide
		if i%2 == 1 {
			conv = small
		}
		want = append(want, w.post(tina.tok, conv, httpMsg(fmt.Sprint("m", i), "hallo", keys)).ID)
	}
	for i, id := range want {
		if f := ws.Read(); f.Type != proto.TypeMessage || f.Message.ID != id {
			t.Fatalf("frame %d: %+v, want message %s", i, f, id)
		}
	}
}
