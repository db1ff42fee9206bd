package messenger

// Hooks for presence_test.go (package messenger_test).

// Crash stops p's loops and removes nothing, as kill -9 would.
func (p *RedisPresence) Crash() {
	close(p.stop)
	p.wg.Wait()
}

// NodeTTL and NodeBeat are the node-liveness timings.
const (
	NodeTTL  = nodeTTL
	NodeBeat = nodeBeat
)
