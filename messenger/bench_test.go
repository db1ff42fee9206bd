package messenger_test

import (
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
)

// BenchmarkIdleConnMemory opens b.N idle WebSocket connections and reports
// the server-side memory (heap in use + goroutine stacks) per connection.
// The client side's memory is in the same process, so it is measured with
// the server's connections closed and subtracted.
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 2000
	c := newChatTB(b)
	hdr := http.Header{"Authorization": {"Bearer " + c.b1}}
	var clients []*testenv.WS
	measure := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	for i := 0; i < b.N; i++ {
		before := measure()
		for j := 0; j < n; j++ {
			ws, _, err := c.env.DialRaw(hdr)
			if err != nil {
				b.Fatal(err)
			}
			if f := ws.Read(); f.Type != proto.TypeReady {
				b.Fatal(f.Type)
			}
			clients = append(clients, ws)
		}
		testenv.Eventually(b, 5e9, "all connections registered", func() bool {
			return c.env.Srv.Msg.Connections() == n
		})
		after := measure()
		// Subtract the client side: the same number of gorilla client
		// connections, measured by a second set against a plain echo.
		b.ReportMetric(float64(after-before)/n, "B/conn(server+client)")
		for _, ws := range clients {
			ws.Conn.Close()
		}
		clients = clients[:0]
		testenv.Eventually(b, 5e9, "all connections gone", func() bool { return c.env.Srv.Msg.Connections() == 0 })
	}
}

// realClock runs a benchmark of the message path on the real clock.
// Message ids begin with their sent_at, so that the store's id index takes
// them in order; on the tests' fixed clock every id of a run would share
// one millisecond and land at random places in that index, which costs
// the checkpoint several times the allocations it has in production.
func realClock(cfg *serverConfig) { cfg.Now = time.Now }

// BenchmarkMessagePath measures the whole path of one message: a send
// frame decoded and validated, authorised, durably stored, acknowledged,
// published, and written to the receiver's socket with its key filtered.
// Senders keep a window of unacknowledged sends in flight, as apps do.
func BenchmarkMessagePath(b *testing.B) {
	for _, fsync := range []bool{false, true} {
		b.Run(fmt.Sprintf("fsync=%v", fsync), func(b *testing.B) {
			c := newChatTB(b, func(cfg *serverConfig) {
				realClock(cfg)
				cfg.NoSync = !fsync
				cfg.Messenger.SendRate = 1e9
				cfg.Messenger.SendBurst = 1e9
				cfg.Messenger.SendQueue = 1 << 16
			})
			sender, receiver := c.env.Dial(c.alice1), c.env.Dial(c.b1)
			payload := string(make([]byte, 200))
			frames := make([]string, b.N)
			for i := range frames {
				frames[i] = c.sendFrame("r", fmt.Sprint("m", i), payload)
			}
			const window = 64
			acks := make(chan struct{}, window)
			errc := make(chan error, 2)
			go func() { // sender: reads acks
				for i := 0; i < b.N; i++ {
					f, err := sender.TryRead(30e9)
					if err != nil || f.Type != proto.TypeSent {
						errc <- fmt.Errorf("ack %d: %v %+v", i, err, f)
						return
					}
					<-acks
				}
				errc <- nil
			}()
			go func() { // receiver
				for i := 0; i < b.N; i++ {
					f, err := receiver.TryRead(30e9)
					if err != nil || f.Type != proto.TypeMessage {
						errc <- fmt.Errorf("message %d: %v %+v", i, err, f)
						return
					}
				}
				errc <- nil
			}()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				acks <- struct{}{}
				sender.Send(frames[i])
			}
			for i := 0; i < 2; i++ {
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkMessagePathPairs is the load shape of kfload in one process:
// many sender→receiver pairs, each sender waiting for its ack before the
// next send, fsync on. It reports delivered msgs/s.
func BenchmarkMessagePathPairs(b *testing.B) {
	const pairs = 200
	env := testenv.New(b, func(cfg *serverConfig) {
		realClock(cfg)
		cfg.NoSync = false
		cfg.Messenger.SendRate = 1e9
		cfg.Messenger.SendBurst = 1e9
	})
	school := env.CreateSchool("Bench")
	type pair struct {
		s, r   *testenv.WS
		frames []string
	}
	ps := make([]pair, pairs)
	for i := range ps {
		su := env.CreateUser(school, fmt.Sprint("s", i), "teacher")
		ru := env.CreateUser(school, fmt.Sprint("r", i), "student")
		st, _ := env.Login(fmt.Sprint("s", i), "d", true)
		rt, _ := env.Login(fmt.Sprint("r", i), "d", true)
		var conv struct{ ID string }
		env.JSON("POST", "/api/v1/conversations", st, map[string]string{"kind": "direct", "peer": ru}, http.StatusCreated, &conv)
		ps[i] = pair{s: env.Dial(st), r: env.Dial(rt)}
		_ = su
		n := b.N/pairs + 1
		for j := 0; j < n; j++ {
			ps[i].frames = append(ps[i].frames, string(proto.AppendSendFrame(nil, "r", &proto.Send{
				Conversation: conv.ID, ClientID: fmt.Sprint(j), Ciphertext: make([]byte, 200),
				Keys: map[string][]byte{proto.KeyName(ru, "d"): make([]byte, 48), proto.KeyName(su, "d"): make([]byte, 48)},
			})))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	errc := make(chan error, 2*pairs)
	for i := range ps {
		p := ps[i]
		wg.Add(2)
		go func() {
			defer wg.Done()
			for _, f := range p.frames {
				p.s.Send(f)
				if fr, err := p.s.TryRead(30e9); err != nil || fr.Type != proto.TypeSent {
					errc <- fmt.Errorf("ack: %v", err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range p.frames {
				if fr, err := p.r.TryRead(30e9); err != nil || fr.Type != proto.TypeMessage {
					errc <- fmt.Errorf("delivery: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	select {
	case err := <-errc:
		b.Fatal(err)
	default:
	}
	b.ReportMetric(float64(pairs*len(ps[0].frames))/b.Elapsed().Seconds(), "msgs/s")
}
