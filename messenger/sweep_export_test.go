package messenger

import "context"

// OnSweptBatch has f called after each full batch of messages a sweep of
// n deletes, for retention_http_test.go (package messenger_test). Set it
// before the sweeps start.
func OnSweptBatch(n *Node, f func(context.Context)) { n.sweptBatch = f }

// SweepBatch is how many messages one batch of a sweep deletes at most.
const SweepBatch = sweepBatch
