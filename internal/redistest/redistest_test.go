package redistest

import (
	"testing"
)

func TestStartRestart(t *testing.T) {
	t.Parallel()
	s := Start(t)
	if _, err := Do(s.Addr(), "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	v, err := Do(s.Addr(), "GET", "k")
	if err != nil || v != "v" {
		t.Fatalf("GET after restart = %v, %v; want v", v, err)
	}
	if got := s.URL(); got != "redis://"+s.Addr()+"/0" {
		t.Fatalf("URL = %q", got)
	}
	s.Kill()
	if _, err := Do(s.Addr(), "PING"); err == nil {
		t.Fatal("PING after Kill succeeded")
	}
}

func TestStartCluster(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3)
	if len(c.Addrs()) != 3 {
		t.Fatalf("Addrs = %v", c.Addrs())
	}
	v, err := Do(c.Addrs()[0], "CLUSTER", "INFO")
	if err != nil {
		t.Fatal(err)
	}
	if state, _ := infoField(v.(string), "cluster_state"); state != "ok" {
		t.Fatalf("cluster_state = %q", state)
	}
}
