package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
)

// The send phase of TestCrashKeepsAcknowledgedMessages.
const (
	crashSends  = 300 // send frames prepared
	crashKillAt = 150 // the server is killed when this many are acknowledged
	crashWindow = 16  // send frames in flight at once
)

// TestCrashKeepsAcknowledgedMessages proves API.md's promise "a sent message
// is never lost" across a crash of the embedded server. A sender pipelines
// messages over a WebSocket; once crashKillAt of them are acknowledged the
// server gets SIGKILL while sends are still in flight. The crash must leave
// a message log holding acknowledged messages: they had not been
// checkpointed into bbolt yet, so only the replay at the next start can
// bring them back. After the restart the receiver's history must hold every
// acknowledged message, unchanged, with the seq of its acknowledgement;
// seqs must run 1..N without gaps or duplicates and the conversation's
// last_seq must be N. A retried client_id must still find its message, the
// next message must get seq N+1, and a graceful stop must leave no log
// behind.
func TestCrashKeepsAcknowledgedMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tmp := t.TempDir()
	serverBin, _ := buildBinaries(t, ctx, filepath.Join(tmp, "bin"))
	began := time.Now()

	// The server on embedded defaults, with cheap Argon2 and no send rate
	// limit that the pipelined sender would hit.
	dataDir := filepath.Join(tmp, "data")
	cfgPath := filepath.Join(tmp, "klassenfunk.yaml")
	cfg := "auth:\n  argon2:\n    memory_kib: 64\n    time: 1\n    threads: 1\n" +
		"messenger:\n  send_rate: 100000\n  send_burst: 100000\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := baseEnv(filepath.Join(tmp, "home"))
	srvEnv := append(env[:len(env):len(env)],
		"KLASSENFUNK_DATA="+dataDir, "KLASSENFUNK_OPERATOR_TOKEN="+operatorToken, "KLASSENFUNK_LISTEN=127.0.0.1:0")
	startServer := func(name string) (*proc, string) {
		t.Helper()
		srv := startProc(t, ctx, name, srvEnv, serverBin, "serve", "--config", cfgPath)
		addr := serving(t, srv)
		return srv, addr
	}
	srv, addr := startServer("klassenfunk serve")
	api := testenv.Remote(t, "http://"+addr)

	// A school, a teacher who sends and a parent who receives, both logged
	// in as personal devices (trust credentials) with a key each, and
	// their direct conversation.
	var school struct {
		ID string `json:"id"`
	}
	api.JSON("POST", "/api/v1/schools", operatorToken, map[string]string{"name": "Grundschule Absturz"}, http.StatusCreated, &school)
	newMember := func(login, role string) crashUser {
		t.Helper()
		clientHash := base64.StdEncoding.EncodeToString(randBytes(32))
		var u struct {
			ID string `json:"id"`
		}
		api.JSON("POST", "/api/v1/schools/"+school.ID+"/users", operatorToken, map[string]string{
			"login": login, "display_name": login, "role": role, "client_hash": clientHash,
		}, http.StatusCreated, &u)
		m := crashUser{id: u.ID, device: login + "-phone"}
		var l struct {
			User struct {
				ID string `json:"id"`
			} `json:"user"`
			Credential struct {
				Kind  string `json:"kind"`
				Token string `json:"token"`
			} `json:"credential"`
		}
		api.JSON("POST", "/api/v1/login", "", map[string]any{
			"login": login, "client_hash": clientHash,
			"device": map[string]any{"id": m.device, "name": login + "s Telefon", "os": "android", "personal": true},
		}, http.StatusOK, &l)
		if l.User.ID != m.id || l.Credential.Kind != "trust" || l.Credential.Token == "" {
			t.Fatalf("login %s: user %q (want %q), credential kind %q", login, l.User.ID, m.id, l.Credential.Kind)
		}
		m.token, m.keyName = l.Credential.Token, proto.KeyName(m.id, m.device)
		api.JSON("PUT", "/api/v1/keys", m.token, map[string]string{"public_key": base64.StdEncoding.EncodeToString(randBytes(32))}, http.StatusNoContent, nil)
		return m
	}
	snd := newMember("lehrerin", "teacher")
	rcv := newMember("vater", "parent")
	var conv struct {
		ID string `json:"id"`
	}
	api.JSON("POST", "/api/v1/conversations", snd.token, map[string]string{"kind": "direct", "peer": rcv.id}, http.StatusCreated, &conv)

	// The messages: random ciphertext, a wrapped key for the receiver's
	// device and one for the sender's own.
	type outMsg struct {
		send   proto.Send
		rcvKey []byte
	}
	msgs := make([]outMsg, crashSends)
	for i := range msgs {
		rk := randBytes(48)
		msgs[i] = outMsg{rcvKey: rk, send: proto.Send{
			Conversation: conv.ID,
			ClientID:     fmt.Sprintf("crash-%d", i),
			Ciphertext:   randBytes(24 + i%40),
			Keys:         map[string][]byte{rcv.keyName: rk, snd.keyName: randBytes(48)},
		}}
	}

	// The send phase: a writer keeps crashWindow sends in flight; the
	// reader records every sent frame and kills the server the moment the
	// crashKillAt-th arrives, so the newest acknowledged messages were
	// written to the log microseconds before and no checkpoint (every 5 s)
	// can have moved them yet.
	ws := dialReadyWS(t, ctx, addr, snd)
	defer ws.Close()
	type ack struct {
		idx int
		id  string
		seq uint64
	}
	var (
		acks       []ack    // owned by the reader until readerDone
		frameProbs []string // likewise
		readErr    error    // likewise
	)
	slots := make(chan struct{}, crashWindow)
	readerDone := make(chan struct{})
	writerDone := make(chan int, 1)
	sendStart := time.Now()
	var killedAfter time.Duration // set by the reader
	go func() {
		defer close(readerDone)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				readErr = err
				return
			}
			f, err := proto.DecodeServerFrame(data)
			if err != nil {
				frameProbs = append(frameProbs, fmt.Sprintf("undecodable frame %q: %v", data, err))
				continue
			}
			switch f.Type {
			case proto.TypeSent:
				idx, err := strconv.Atoi(strings.TrimPrefix(f.Ref, "r"))
				if err != nil || idx < 0 || idx >= crashSends || !strings.HasPrefix(f.Ref, "r") {
					frameProbs = append(frameProbs, fmt.Sprintf("sent frame with unknown ref: %s", data))
					continue
				}
				acks = append(acks, ack{idx: idx, id: f.ID, seq: f.Seq})
				if len(acks) == crashKillAt {
					srv.signal(syscall.SIGKILL)
					killedAfter = time.Since(sendStart)
				}
				<-slots
			case proto.TypeError:
				frameProbs = append(frameProbs, fmt.Sprintf("error frame: %s", data))
				<-slots
			default:
				frameProbs = append(frameProbs, fmt.Sprintf("unexpected frame: %s", data))
			}
		}
	}()
	go func() {
		written := 0
		defer func() { writerDone <- written }()
		var frame []byte
		for i := range msgs {
			select {
			case slots <- struct{}{}:
			case <-readerDone:
				return
			}
			frame = proto.AppendSendFrame(frame[:0], "r"+strconv.Itoa(i), &msgs[i].send)
			ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if ws.WriteMessage(websocket.TextMessage, frame) != nil {
				return // the server is gone
			}
			written++
		}
	}()
	select {
	case <-readerDone:
	case <-time.After(20 * time.Second):
		t.Fatalf("the send phase did not end within 20s; server output:\n%s", srv.all.Bytes())
	}
	written := <-writerDone
	select {
	case <-srv.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the server still runs 10s after SIGKILL")
	}
	if len(frameProbs) > 0 {
		t.Fatalf("the sender got bad frames:\n%s", strings.Join(frameProbs, "\n"))
	}
	if len(acks) < crashKillAt {
		t.Fatalf("only %d of %d sends acknowledged before the connection ended (%v); server output:\n%s",
			len(acks), written, readErr, srv.all.Bytes())
	}
	if !killedBy(srv.err, syscall.SIGKILL) {
		t.Fatalf("the server ended with %v, not by SIGKILL: it was not the crash under test", srv.err)
	}
	t.Logf("killed after %d acks in %v: %d sends written, %d acknowledged in all",
		crashKillAt, killedAfter.Round(time.Millisecond), written, len(acks))

	// The crash left work for the replay: a message log holding
	// acknowledged messages (records carry the message id verbatim).
	logData := readMsgLogs(t, dataDir)
	if len(logData) == 0 {
		t.Fatal("no non-empty klassenfunk.db.msglog.* after the crash: the acknowledged messages were not in the message log, so the replay is not tested")
	}
	inLog := 0
	for _, a := range acks {
		if bytes.Contains(logData, []byte(a.id)) {
			inLog++
		}
	}
	if inLog == 0 {
		t.Fatalf("the message log left by the crash (%d bytes) holds none of the %d acknowledged messages", len(logData), len(acks))
	}
	t.Logf("the crash left %d bytes of message log holding %d acknowledged messages", len(logData), inLog)

	// The restart on the same data. The trust credentials survived.
	srv2, addr := startServer("klassenfunk serve (after the crash)")
	api = testenv.Remote(t, "http://"+addr)
	var me struct {
		ID string `json:"id"`
	}
	api.JSON("GET", "/api/v1/me", rcv.token, nil, http.StatusOK, &me)
	if me.ID != rcv.id {
		t.Fatalf("GET /me as the receiver after the restart: id %q, want %q", me.ID, rcv.id)
	}

	// The receiver's history, page by page.
	var hist []proto.Message
	for page := 0; ; page++ {
		if page > crashSends {
			t.Fatal("the history does not end")
		}
		after := uint64(0)
		if len(hist) > 0 {
			after = hist[len(hist)-1].Seq
		}
		var out struct {
			Messages []proto.Message `json:"messages"`
			More     *bool           `json:"more"`
		}
		api.JSON("GET", fmt.Sprintf("/api/v1/conversations/%s/messages?after_seq=%d&limit=100", conv.ID, after),
			rcv.token, nil, http.StatusOK, &out)
		if out.More == nil {
			t.Fatal("a history page lacks more")
		}
		hist = append(hist, out.Messages...)
		if !*out.More {
			break
		}
		if len(out.Messages) == 0 {
			t.Fatal("an empty history page says more: true")
		}
	}
	n := uint64(len(hist))
	byID := make(map[string]proto.Message, len(hist))
	for i, m := range hist {
		if m.Seq != uint64(i)+1 {
			t.Fatalf("history position %d has seq %d: seqs are not 1..N without gaps or duplicates", i, m.Seq)
		}
		if _, dup := byID[m.ID]; dup {
			t.Fatalf("message %s appears twice in the history", m.ID)
		}
		byID[m.ID] = m
		if m.Conversation != conv.ID || m.Sender.UserID != snd.id || m.Sender.DeviceID != snd.device {
			t.Fatalf("message %d: conversation %q, sender %+v", m.Seq, m.Conversation, m.Sender)
		}
	}
	for _, a := range acks {
		m, ok := byID[a.id]
		if !ok {
			survived := 0
			for _, b := range acks {
				if _, ok := byID[b.id]; ok {
					survived++
				}
			}
			t.Fatalf("acknowledged message %s (seq %d, client_id %s) is lost after the crash; %d of %d acknowledged messages survived",
				a.id, a.seq, msgs[a.idx].send.ClientID, survived, len(acks))
		}
		want := msgs[a.idx]
		if m.Seq != a.seq {
			t.Fatalf("message %s was acknowledged with seq %d but has seq %d", a.id, a.seq, m.Seq)
		}
		if !bytes.Equal(m.Ciphertext, want.send.Ciphertext) || !maps.EqualFunc(m.Keys, map[string][]byte{rcv.keyName: want.rcvKey}, bytes.Equal) {
			t.Fatalf("message %s (seq %d) came back with other ciphertext or keys", a.id, a.seq)
		}
	}
	if n < uint64(len(acks)) || n > uint64(written) {
		t.Fatalf("the history has %d messages: %d were acknowledged, %d written", n, len(acks), written)
	}
	var convs []struct {
		ID      string `json:"id"`
		LastSeq uint64 `json:"last_seq"`
	}
	api.JSON("GET", "/api/v1/conversations", rcv.token, nil, http.StatusOK, &convs)
	if len(convs) != 1 || convs[0].ID != conv.ID || convs[0].LastSeq != n {
		t.Fatalf("GET /conversations after the restart: %+v, want %s with last_seq %d", convs, conv.ID, n)
	}
	t.Logf("after the restart: %d messages, seqs 1..%d, all %d acknowledged ones intact", n, n, len(acks))

	// Sending goes on: a retried client_id finds its message, a new
	// message gets the next seq.
	ws2 := dialReadyWS(t, ctx, addr, snd)
	defer ws2.Close()
	last := acks[len(acks)-1]
	if got := sendOne(t, ws2, "retry", &msgs[last.idx].send); got.ID != last.id || got.Seq != last.seq {
		t.Fatalf("retrying client_id %s: id %s seq %d, want the acknowledged %s seq %d",
			msgs[last.idx].send.ClientID, got.ID, got.Seq, last.id, last.seq)
	}
	next := &proto.Send{
		Conversation: conv.ID,
		ClientID:     "crash-after-restart",
		Ciphertext:   randBytes(32),
		Keys:         map[string][]byte{rcv.keyName: randBytes(48), snd.keyName: randBytes(48)},
	}
	if got := sendOne(t, ws2, "next", next); got.Seq != n+1 {
		t.Fatalf("the first new message after the restart got seq %d, want %d", got.Seq, n+1)
	}
	ws2.Close()

	// A graceful stop checkpoints and removes the log.
	if err := srv2.stop(20 * time.Second); err != nil {
		t.Fatalf("server after SIGTERM: %v", err)
	}
	if left, err := filepath.Glob(filepath.Join(dataDir, "klassenfunk.db.msglog.*")); err != nil || len(left) > 0 {
		t.Fatalf("after a graceful stop the message log is left: %v %v", left, err)
	}
	t.Logf("crash test (without the build) took %v", time.Since(began).Round(time.Millisecond))
}

// crashUser is a user logged in with one personal device.
type crashUser struct {
	id, device, token, keyName string
}

// dialReadyWS opens the WebSocket of addr's server as u's device (token in
// the Authorization header) and waits for its ready frame.
func dialReadyWS(t *testing.T, ctx context.Context, addr string, u crashUser) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+addr+"/api/v1/ws", http.Header{"Authorization": {"Bearer " + u.token}})
	if err != nil {
		if resp != nil {
			t.Fatalf("ws dial: %v (HTTP %d)", err, resp.StatusCode)
		}
		t.Fatalf("ws dial: %v", err)
	}
	c.SetReadLimit(proto.MaxFrameSize + 1024)
	f := readFrame(t, c)
	if f.Type != proto.TypeReady || f.UserID != u.id || f.DeviceID != u.device {
		c.Close()
		t.Fatalf("first frame %+v, want ready for %s", f, u.keyName)
	}
	return c
}

// readFrame reads and decodes the next frame within 10 s.
func readFrame(t *testing.T, c *websocket.Conn) *proto.ServerFrame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("ws read: %v", err)
	}
	f, err := proto.DecodeServerFrame(data)
	if err != nil {
		t.Fatalf("ws frame %q: %v", data, err)
	}
	return f
}

// sendOne sends s with ref and returns the sent frame answering it.
func sendOne(t *testing.T, c *websocket.Conn, ref string, s *proto.Send) *proto.ServerFrame {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, proto.AppendSendFrame(nil, ref, s)); err != nil {
		t.Fatalf("ws write: %v", err)
	}
	f := readFrame(t, c)
	if f.Type != proto.TypeSent || f.Ref != ref {
		t.Fatalf("answer to send %s: %+v, want a sent frame", ref, f)
	}
	return f
}

// readMsgLogs returns the concatenated contents of the message log files
// in dataDir.
func readMsgLogs(t *testing.T, dataDir string) []byte {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dataDir, "klassenfunk.db.msglog.*"))
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// killedBy reports whether a process that ended with err was killed by sig.
func killedBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	status, ok := ee.Sys().(syscall.WaitStatus)
	return ok && status.Signaled() && status.Signal() == sig
}

// randBytes returns n random bytes.
func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
