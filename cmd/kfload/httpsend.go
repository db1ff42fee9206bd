//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"klassenfunk/proto"
)

// httpSender sends one pair's messages with POST
// /conversations/{id}/messages (--send-via http), as an app without an
// open socket would. Owned by the pair's sender goroutine.
type httpSender struct {
	hc   *http.Client
	url  string
	body []byte // reused request body
	resp []byte // reused response buffer
}

// newSendClient returns the client the HTTP senders share: at most conns
// keep-alive connections, all of them kept idle between sends.
func newSendClient(conns int, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	tr := &http.Transport{
		DialContext:         dial,
		MaxConnsPerHost:     conns,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// appendSendBody appends the JSON request body of s.
func appendSendBody(b []byte, s *proto.Send) []byte {
	b = append(b, `{"client_id":`...)
	b = appendJSONString(b, s.ClientID)
	b = append(b, `,"ciphertext":"`...)
	b = base64.StdEncoding.AppendEncode(b, s.Ciphertext)
	b = append(b, `","keys":{`...)
	for i, name := range slices.Sorted(maps.Keys(s.Keys)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, name)
		b = append(b, `:"`...)
		b = base64.StdEncoding.AppendEncode(b, s.Keys[name])
		b = append(b, '"')
	}
	return append(b, "}}"...)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	q, err := json.Marshal(s)
	if err != nil {
		panic(err) // a string always marshals
	}
	return append(b, q...)
}

// post sends s as p's sender and counts the answer. It returns false only
// when ctx has ended (the run is interrupted).
func (h *httpSender) post(ctx context.Context, rs *runState, p *pairState, s *proto.Send, measured bool, start time.Time) bool {
	h.body = appendSendBody(h.body[:0], s)
	req, err := http.NewRequestWithContext(ctx, "POST", h.url, bytes.NewReader(h.body))
	if err != nil {
		panic(err) // the URL was built from a valid base
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.snd.token)
	resp, err := h.hc.Do(req)
	if err == nil {
		h.resp, err = readAll(h.resp[:0], resp.Body)
		resp.Body.Close()
	}
	now := time.Now()
	if err != nil {
		rs.respTotal.Add(1) // answered by no one: counted as unanswered
		if ctx.Err() != nil {
			return false
		}
		rs.mu.Lock()
		rs.writeErrors["http: "+shortErr(err)]++
		rs.mu.Unlock()
		return true
	}
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
		var m struct {
			ID  string `json:"id"`
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal(h.resp, &m); err != nil || m.ID == "" || m.Seq == 0 {
			rs.decodeErrors.Add(1)
			p.answerErr(rs, "undecodable_answer", measured)
			return true
		}
		p.ack(rs, m.Seq, m.ID, measured, now, now.Sub(start))
		return true
	}
	var e struct {
		Error struct {
			Code proto.Code `json:"code"`
		} `json:"error"`
	}
	code := proto.Code(fmt.Sprintf("http_%d", resp.StatusCode))
	if json.Unmarshal(h.resp, &e) == nil && e.Error.Code != "" {
		code = e.Error.Code
	}
	p.answerErr(rs, code, measured)
	return true
}

// readAll appends r to b up to 4 MiB.
func readAll(b []byte, r io.Reader) ([]byte, error) {
	buf := bytes.NewBuffer(b)
	_, err := buf.ReadFrom(io.LimitReader(r, 4<<20))
	return buf.Bytes(), err
}
