package redistest

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterTimeout bounds how long the cluster may take to reach
// cluster_state:ok on every node after redis-cli created it.
const clusterTimeout = 30 * time.Second

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	// Nodes are the masters, in the order of Addrs.
	Nodes []*Server
}

// StartCluster starts masters redis-server processes (as Start does, plus
// --cluster-enabled yes --cluster-config-file nodes.conf), joins them with
// `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes` and
// waits until every node reports cluster_state:ok. Redis Cluster needs at
// least three masters.
func StartCluster(t testing.TB, masters int, opts ...Option) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: StartCluster(%d): Redis Cluster needs at least 3 masters", masters)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli not found: run `make test` (it installs it) or apt-get install redis-tools (%v)", err)
	}
	opts = append([]Option{Args(
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", "5000",
	)}, opts...)
	c := &Cluster{}
	for range masters {
		c.Nodes = append(c.Nodes, Start(t, opts...))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(clusterTimeout)
	for _, addr := range c.Addrs() {
		for {
			v, err := Do(addr, "CLUSTER", "INFO")
			info, _ := v.(string)
			if err == nil {
				state, _ := infoField(info, "cluster_state")
				slots, _ := infoField(info, "cluster_slots_ok")
				known, _ := infoField(info, "cluster_known_nodes")
				if state == "ok" && slots == "16384" && known == strconv.Itoa(masters) {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: cluster node %s not ok after %v: %v\n%s", addr, clusterTimeout, err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

// Addrs returns the host:port of every master.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}
