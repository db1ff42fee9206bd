package messenger

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// An upload that stalls ends after uploadIdleTime without data, not when
// the client pleases.
func TestUploadBodyStall(t *testing.T) {
	old := uploadIdleTime
	uploadIdleTime = 100 * time.Millisecond
	t.Cleanup(func() { uploadIdleTime = old })
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := &uploadBody{r: r.Body, rc: http.NewResponseController(w), until: time.Now().Add(uploadMaxTime)}
		io.Copy(io.Discard, b)
		got <- b.err
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx") // then nothing
	select {
	case err := <-got:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read error %v, want a deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled upload still reads after 10 s")
	}
}
