package messenger_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/messenger"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

func TestHTTPRetention(t *testing.T) {
	var dataDir string
	c := newChat(t, httpCaptureDataDir(&dataDir))
	a := httpAPI{t, c.env}
	ctx := context.Background()
	store := c.env.Srv.Store()
	dir := httpAttachmentDir(dataDir)

	att := a.mustUpload(c.alice1, httpBlob(100))
	body := httpChatBody(c, "m1", "vergänglich")
	body["attachments"] = []string{att}
	m := a.post(c.alice1, c.conv, body)
	if !m.ExpiresAt.Equal(m.SentAt.Add(720 * time.Hour)) {
		t.Fatalf("expires_at %v, sent_at %v", m.ExpiresAt, m.SentAt)
	}

	// One second before the end everything is still there.
	c.env.Clock.Advance(720*time.Hour - time.Second)
	c.env.JSON("GET", "/api/v1/messages/"+m.ID, c.b1, nil, http.StatusOK, nil)
	if r := c.env.Do("GET", "/api/v1/attachments/"+att, c.b1, nil); r.Status != http.StatusOK || !bytes.Equal(r.Body, httpBlob(100)) {
		t.Fatalf("attachment before expiry: %d", r.Status)
	}

	c.env.Clock.Advance(2 * time.Second)
	for name, tok := range map[string]string{"bob": c.b1, "alice": c.alice1} {
		t.Run(name, func(t *testing.T) {
			httpWantError(t, c.env.Do("GET", "/api/v1/messages/"+m.ID, tok, nil), 404, proto.CodeNotFound)
			httpWantError(t, c.env.Do("GET", "/api/v1/attachments/"+att, tok, nil), 404, proto.CodeNotFound)
			r := c.env.JSON("GET", "/api/v1/conversations/"+c.conv+"/messages", tok, nil, http.StatusOK, nil)
			if got := string(bytes.TrimSpace(r.Body)); got != `{"messages":[],"more":false}` {
				t.Fatalf("history after expiry: %s", got)
			}
			ws := c.env.Dial(tok)
			ws.Send(`{"type":"sync"}`)
			if f := ws.Read(); f.Type != proto.TypeSynced {
				t.Fatalf("sync after expiry sent %q (%+v) before synced", f.Type, f.Message)
			}
			ws.Send(`{"type":"sync","cursors":{"` + c.conv + `":0}}`)
			if f := ws.Read(); f.Type != proto.TypeSynced {
				t.Fatalf("sync from cursor 0 after expiry sent %q before synced", f.Type)
			}
		})
	}
	// An expired attachment cannot be referenced any more.
	again := httpChatBody(c, "m2", "noch einmal")
	again["attachments"] = []string{att}
	httpWantError(t, c.env.Do("POST", "/api/v1/conversations/"+c.conv+"/messages", c.alice1, again), 400, proto.CodeInvalidRequest)

	if got := httpDirFiles(t, dir); !slices.Equal(got, []string{att}) {
		t.Fatalf("before the sweep the blob is still on disk: dir %v", got)
	}
	c.env.Srv.Sweep(ctx)
	if n, err := store.CountMessages(ctx); err != nil || n != 0 {
		t.Fatalf("after the sweep %d messages are stored (%v), want 0", n, err)
	}
	if got := httpDirFiles(t, dir); len(got) != 0 {
		t.Fatalf("after the sweep the attachment dir holds %v", got)
	}
	if _, err := store.Attachment(ctx, att, time.Time{}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("attachment metadata after the sweep: %v, want ErrNotFound", err)
	}
	if got := c.env.Metric("klassenfunk_retention_deleted_total"); got < 2 {
		t.Fatalf("klassenfunk_retention_deleted_total %v, want >= 2", got)
	}

	// Seqs go on after expiry, and a fresh message survives a sweep.
	fresh := c.post(c.alice1, "m3", "neu")
	if fresh.Seq != 2 {
		t.Fatalf("seq after expiry %d, want 2", fresh.Seq)
	}
	c.env.Srv.Sweep(ctx)
	if n, err := store.CountMessages(ctx); err != nil || n != 1 {
		t.Fatalf("after a second sweep %d messages are stored (%v), want 1", n, err)
	}
	c.env.JSON("GET", "/api/v1/messages/"+fresh.ID, c.b1, nil, http.StatusOK, nil)
}

func TestHTTPRetentionConfigured(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) {
		cfg.Retention.Messages = time.Hour
		cfg.Retention.Attachments = 2 * time.Hour
	})
	a := httpAPI{t, c.env}
	m := c.post(c.alice1, "m1", "kurzlebig")
	if !m.ExpiresAt.Equal(m.SentAt.Add(time.Hour)) {
		t.Fatalf("expires_at %v, want sent_at %v + 1h", m.ExpiresAt, m.SentAt)
	}
	r := a.upload(c.alice1, httpBlob(5), false)
	var up struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if r.Status != http.StatusCreated || json.Unmarshal(r.Body, &up) != nil || !up.ExpiresAt.Equal(c.env.Clock.Now().Add(2*time.Hour)) {
		t.Fatalf("attachment with 2h retention: %d %s", r.Status, r.Body)
	}

	c.env.Clock.Advance(time.Hour - time.Second)
	var got struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	c.env.JSON("GET", "/api/v1/messages/"+m.ID, c.b1, nil, http.StatusOK, &got)
	if !got.ExpiresAt.Equal(m.ExpiresAt) {
		t.Fatalf("GET expires_at %v, want %v", got.ExpiresAt, m.ExpiresAt)
	}
	c.env.Clock.Advance(time.Second)
	httpWantError(t, c.env.Do("GET", "/api/v1/messages/"+m.ID, c.b1, nil), 404, proto.CodeNotFound)
}

// TestRetentionSweepBatches: a sweep deletes in batches (with a rest after
// each full one) until nothing expired is left, not one batch per round.
func TestRetentionSweepBatches(t *testing.T) {
	c := newChat(t)
	ctx := context.Background()
	store := c.env.Srv.Store()
	const n = 2500 // three batches
	now := c.env.Clock.Now().UTC()
	for i := range n {
		_, _, err := store.AppendMessage(ctx, storage.Message{
			ID: fmt.Sprintf("sweep-%05d", i), Conversation: c.conv, SenderUser: c.alice, SenderDevice: "a-phone",
			SentAt: now, ExpiresAt: now.Add(time.Hour), Ciphertext: []byte{1}, Keys: map[string][]byte{c.bob + "/b-phone": {1}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	fresh := c.post(c.alice1, "m-fresh", "bleibt") // expires 720 h later
	before := c.env.Metric("klassenfunk_retention_deleted_total")
	c.env.Clock.Advance(2 * time.Hour)
	c.env.Srv.Sweep(ctx)
	if got, err := store.CountMessages(ctx); err != nil || got != 1 {
		t.Fatalf("after the sweep %d messages are stored (%v), want the fresh one", got, err)
	}
	if got := c.env.Metric("klassenfunk_retention_deleted_total") - before; got != n {
		t.Fatalf("klassenfunk_retention_deleted_total went up by %v, want %d", got, n)
	}
	c.env.JSON("GET", "/api/v1/messages/"+fresh.ID, c.b1, nil, http.StatusOK, nil)
}

// TestSweepCancelled: a sweep ended by its context (the server closing)
// stops, and is no error in the log.
func TestSweepCancelled(t *testing.T) {
	c := newChat(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.env.Srv.Sweep(ctx)
	if logs := c.env.Logs(); strings.Contains(logs, `"msg":"sweep`) {
		t.Fatalf("a cancelled sweep logged:\n%s", logs)
	}
}

// TestCloseEndsSweep: closing the server ends a sweep under way (here one
// that rests after its first batch until it is told to stop) without an
// error in the log, and the next start deletes what is left.
func TestCloseEndsSweep(t *testing.T) {
	var dataDir string
	c := newChat(t, httpCaptureDataDir(&dataDir), func(cfg *serverConfig) { cfg.Retention.SweepInterval = time.Second })
	ctx := context.Background()
	const batch = messenger.SweepBatch
	const n = batch + batch/2
	now := c.env.Clock.Now().UTC()
	for i := range n {
		_, _, err := c.env.Srv.Store().AppendMessage(ctx, storage.Message{
			ID: fmt.Sprintf("close-%05d", i), Conversation: c.conv, SenderUser: c.alice, SenderDevice: "a-phone",
			SentAt: now, ExpiresAt: now.Add(time.Hour), Ciphertext: []byte{1}, Keys: map[string][]byte{c.bob + "/b-phone": {1}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	c.env.Clock.Advance(2 * time.Hour)
	resting, giveUp := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(giveUp) }) // before the server's cleanup, should the test fail
	messenger.OnSweptBatch(c.env.Srv.Msg, func(ctx context.Context) {
		close(resting)
		select {
		case <-ctx.Done():
		case <-giveUp:
		}
	})
	c.env.Srv.Start()
	select {
	case <-resting:
	case <-time.After(10 * time.Second):
		t.Fatal("no sweep began")
	}
	closed := make(chan error, 1)
	go func() { closed <- c.env.Srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits for the sweep")
	}
	if logs := c.env.Logs(); strings.Contains(logs, `"msg":"sweep`) {
		t.Fatalf("the ended sweep logged:\n%s", logs)
	}
	if got := c.env.MetricWith("klassenfunk_retention_deleted_total", "type", "messages"); got != batch {
		t.Fatalf("%v messages deleted before the close, want one batch (%d)", got, batch)
	}

	next := testenv.New(t, func(cfg *serverConfig) { cfg.DataDir = dataDir })
	store := next.Srv.Store()
	if got, err := store.CountMessages(ctx); err != nil || got != n-batch {
		t.Fatalf("after the restart %d messages are stored (%v), want %d", got, err, n-batch)
	}
	next.Clock.Advance(2 * time.Hour)
	next.Srv.Sweep(ctx)
	if got, err := store.CountMessages(ctx); err != nil || got != 0 {
		t.Fatalf("after the next sweep %d messages are stored (%v), want none", got, err)
	}
}
