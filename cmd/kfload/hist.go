//go:build unix

package main

import (
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram in microseconds (HDR-like): values
// below 64 µs are exact, above that every power of two is split into
// histSub equal buckets, so a bucket is at most 1/32 (about 3 %) of its
// value wide. It is owned by one goroutine (no locking); merge combines
// them afterwards.
type hist struct {
	counts [histBuckets]uint32
	n      uint64
	sum    uint64 // µs
	min    uint64
	max    uint64
}

const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histMaxUS   = 1<<32 - 1 // values are clamped to about 71 minutes
	histBuckets = (32-histSubBits)*histSub + histSub
)

func histBucket(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	e := bits.Len64(v) - (histSubBits + 1) // v>>e is in [histSub, 2*histSub)
	return (e+1)*histSub + int(v>>e) - histSub
}

// histRange returns the smallest value of bucket i and the bucket's width.
func histRange(i int) (low, width uint64) {
	if i < 2*histSub {
		return uint64(i), 1
	}
	e := uint(i/histSub - 1)
	m := uint64(i%histSub + histSub)
	return m << e, 1 << e
}

// record adds one latency.
func (h *hist) record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d / time.Microsecond)
	}
	if v > histMaxUS {
		v = histMaxUS
	}
	h.counts[histBucket(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// mergedHist is the sum of many hists (uint64 counts).
type mergedHist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64
	min    uint64
	max    uint64
}

func (m *mergedHist) add(h *hist) {
	if h == nil || h.n == 0 {
		return
	}
	for i, c := range h.counts {
		m.counts[i] += uint64(c)
	}
	if m.n == 0 || h.min < m.min {
		m.min = h.min
	}
	if h.max > m.max {
		m.max = h.max
	}
	m.n += h.n
	m.sum += h.sum
}

// quantile returns the value at quantile q (0..1) in µs: the middle of the
// bucket holding it, clamped to the observed minimum and maximum.
func (m *mergedHist) quantile(q float64) uint64 {
	if m.n == 0 {
		return 0
	}
	rank := uint64(q*float64(m.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > m.n {
		rank = m.n
	}
	var cum uint64
	for i, c := range m.counts {
		cum += c
		if cum >= rank {
			low, w := histRange(i)
			v := low + w/2
			if w == 1 {
				v = low
			}
			return min(max(v, m.min), m.max)
		}
	}
	return m.max
}

// latencySummary is the report form of a histogram, in milliseconds.
type latencySummary struct {
	Count  uint64  `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	MinMS  float64 `json:"min_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p999_ms"`
	MaxMS  float64 `json:"max_ms"`
}

func (m *mergedHist) summary() latencySummary {
	ms := func(us uint64) float64 { return float64(us) / 1000 }
	s := latencySummary{Count: m.n}
	if m.n == 0 {
		return s
	}
	s.MeanMS = float64(m.sum) / float64(m.n) / 1000
	s.MinMS = ms(m.min)
	s.P50MS = ms(m.quantile(0.50))
	s.P90MS = ms(m.quantile(0.90))
	s.P99MS = ms(m.quantile(0.99))
	s.P999MS = ms(m.quantile(0.999))
	s.MaxMS = ms(m.max)
	return s
}
