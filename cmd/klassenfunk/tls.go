package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Built-in TLS (MISSION D6: "TLS 1.3, built in or behind a proxy"). With
// tls_cert_file and tls_key_file set, serve speaks TLS 1.3 only, and HTTP/2
// beside HTTP/1.1. A renewed certificate (certbot, acme.sh) is picked up
// without a restart: the files are looked at again at most once every
// certCheckEvery, and a pair that does not load keeps the old one in use.
//
// Behind a TLS-terminating proxy, leave both empty. For many thousands of
// sockets a proxy is the better place: a TLS socket cannot be read
// through the node's epoll poller and keeps a reader goroutine of its own.

const certCheckEvery = time.Minute

// certReloader serves the certificate of certFile and keyFile, loading
// them again when either has changed.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]time.Time // the files' modification times when cert was loaded
	checkedAt time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log, now: time.Now}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// load reads the pair; on an error the certificate in use stays.
func (r *certReloader) load() error {
	stamp, err := r.stamps()
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &c, stamp
	return nil
}

func (r *certReloader) stamps() ([2]time.Time, error) {
	var s [2]time.Time
	for i, p := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return s, fmt.Errorf("TLS: %w", err)
		}
		s[i] = fi.ModTime()
	}
	return s, nil
}

// getCertificate is tls.Config.GetCertificate.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checkedAt) >= certCheckEvery {
		r.checkedAt = now
		if s, err := r.stamps(); err == nil && s != r.stamp {
			if err := r.load(); err != nil {
				r.log.Error("TLS certificate not reloaded; the old one stays in use", "err", err)
			} else {
				r.log.Info("TLS certificate reloaded", "file", r.certFile)
			}
		}
	}
	return r.cert, nil
}

// tlsConfig returns the server's TLS configuration for the pair, or nil
// when neither file is set.
func tlsConfig(certFile, keyFile string, log *slog.Logger) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case certFile == "" || keyFile == "":
		return nil, errors.New("config: set both tls_cert_file and tls_key_file, or neither")
	}
	r, err := newCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: r.getCertificate}, nil
}
