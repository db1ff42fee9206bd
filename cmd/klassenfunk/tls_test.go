package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	stdlog "log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with serial
// and its key as PEM files, and returns the certificate.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "klassenfunk test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tlsNode is a test node served with serve's TLS configuration and a
// self-signed certificate for 127.0.0.1.
type tlsNode struct {
	env               *testenv.Env
	addr              string // host:port
	cert              *x509.Certificate
	certFile, keyFile string
}

func serveTLS(t *testing.T) tlsNode {
	t.Helper()
	dir := t.TempDir()
	n := tlsNode{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	n.cert = writeCert(t, n.certFile, n.keyFile, 1)
	cfg, err := tlsConfig(n.certFile, n.keyFile, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	n.env = testenv.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: n.env.Srv.Handler(), TLSConfig: cfg}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	n.addr = ln.Addr().String()
	return n
}

// TestBuiltinTLS serves the real handler with serve's TLS configuration:
// TLS 1.3 only, HTTP/2 for requests, WebSockets over wss.
func TestBuiltinTLS(t *testing.T) {
	n := serveTLS(t)
	env, cert := n.env, n.cert
	base := "https://" + n.addr
	pool := x509.NewCertPool()
	pool.AddCert(cert)

	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12}}}
	if _, err := old.Get(base + "/healthz"); err == nil {
		t.Fatal("a TLS 1.2 client was served")
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS.Version != tls.VersionTLS13 || resp.ProtoMajor != 2 {
		t.Fatalf("healthz over TLS: %d, TLS %x, HTTP/%d", resp.StatusCode, resp.TLS.Version, resp.ProtoMajor)
	}

	school := env.CreateSchool("Schule")
	env.CreateUser(school, "tina", "teacher")
	tok, _ := env.Login("tina", "phone", true)
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	ws, _, err := d.Dial("wss://"+n.addr+"/api/v1/ws", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if f, err := proto.DecodeServerFrame(data); err != nil || f.Type != proto.TypeReady {
		t.Fatalf("first frame over wss: %s %v", data, err)
	}
}

// TestCertReload: a renewed certificate is served once it has been
// looked at again; a broken pair keeps the old one in use.
func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, 1)
	r, err := newCertReloader(certFile, keyFile, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.now = func() time.Time { return now }
	serial := func() int64 {
		t.Helper()
		c, err := r.getCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.Int64()
	}
	if s := serial(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	renew := func(s int64) {
		writeCert(t, certFile, keyFile, s)
		later := now.Add(time.Duration(s) * time.Hour) // a new modification time
		os.Chtimes(certFile, later, later)
		os.Chtimes(keyFile, later, later)
	}
	renew(2)
	if s := serial(); s != 1 {
		t.Fatalf("serial %d before the next look, want 1", s)
	}
	now = now.Add(certCheckEvery)
	if s := serial(); s != 2 {
		t.Fatalf("serial %d after the renewal, want 2", s)
	}
	os.WriteFile(keyFile, []byte("not a key"), 0o600)
	later := now.Add(5 * time.Hour)
	os.Chtimes(keyFile, later, later)
	now = now.Add(certCheckEvery)
	if s := serial(); s != 2 {
		t.Fatalf("serial %d after a broken renewal, want the old 2", s)
	}
	if _, err := tlsConfig(certFile, "", slog.Default()); err == nil {
		t.Fatal("a certificate without a key was accepted")
	}
	if _, err := tlsConfig(certFile, keyFile, slog.Default()); err == nil {
		t.Fatal("a broken key was accepted at start")
	}
}

// TestHandshakeErrorAnonymized: net/http logs a failed TLS handshake with
// the client's address; serve's error log anonymizes it.
func TestHandshakeErrorAnonymized(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1_800_000_000, 0)
	l := &anonymizedLog{log: slog.New(slog.NewTextHandler(&buf, nil)), now: func() time.Time { return now }}
	std := stdlog.New(l, "", 0)
	std.Printf("http: TLS handshake error from 192.0.2.57:40112: tls: client offered only unsupported versions")
	if s := buf.String(); strings.Contains(s, "192.0.2.57") || !strings.Contains(s, "192.0.2.0:40112") {
		t.Fatalf("logged %q", s)
	}
	// A flood: at most httpLogBurst lines a second, then a count.
	buf.Reset()
	for range 100 {
		std.Printf("http: TLS handshake error from 192.0.2.58:1: EOF")
	}
	if n := strings.Count(buf.String(), "handshake error"); n != httpLogBurst-1 {
		t.Fatalf("%d lines in a second, want %d", n, httpLogBurst-1)
	}
	now = now.Add(time.Second)
	std.Printf("http: TLS handshake error from 192.0.2.58:1: EOF")
	if s := buf.String(); !strings.Contains(s, "count=81") {
		t.Fatalf("no count of the lines left out: %q", s[max(0, len(s)-300):])
	}
}

// TestAdminOverBuiltinTLS: the admin tasks reach a node with built-in TLS
// through its configuration (https, its own certificate trusted).
func TestAdminOverBuiltinTLS(t *testing.T) {
	clearEnv(t)
	n := serveTLS(t)
	_, port, _ := net.SplitHostPort(n.addr)
	conf := filepath.Join(t.TempDir(), "klassenfunk.yaml")
	yaml := "listen: 0.0.0.0:" + port + "\ntls_cert_file: " + n.certFile + "\ntls_key_file: " + n.keyFile + "\n"
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KLASSENFUNK_OPERATOR_TOKEN", testenv.OperatorToken)
	out, _, err := runCLI(t, "", "admin", "--config", conf, "stats")
	if err != nil || !strings.Contains(out, "schools") {
		t.Fatalf("admin stats over TLS: %q %v", out, err)
	}
}
