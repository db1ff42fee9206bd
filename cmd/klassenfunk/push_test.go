package main

import (
	"errors"
	"flag"
	"net/http"
	"strings"
	"testing"

	"klassenfunk/internal/testenv"
	"klassenfunk/push/pushtest"
	"klassenfunk/server"
)

func TestPushTestCommand(t *testing.T) {
	clearEnv(t)
	prov := pushtest.New(t)
	env := testenv.New(t, func(c *server.Config) {
		c.Push.FCMCredentials, c.Push.FCMEndpoint, c.Push.CAFile = prov.ServiceAccountFile, prov.FCMEndpoint(), prov.CAFile
	})
	school := env.CreateSchool("CLI-Schule")
	ok := env.CreateUser(school, "cli-ok", "student")
	dead := env.CreateUser(school, "cli-dead", "student")
	none := env.CreateUser(school, "cli-none", "student")
	for login, tok := range map[string]string{"cli-ok": "fcm-ok-token", "cli-dead": "fcm-dead-token"} {
		cred, _ := env.Login(login, "phone", true)
		env.JSON("PUT", "/api/v1/push", cred, map[string]string{"provider": "fcm", "token": tok}, http.StatusOK, nil)
	}
	prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		if q.Token == "fcm-dead-token" {
			return pushtest.FCMUnregistered()
		}
		return nil
	})
	t.Setenv("KLASSENFUNK_OPERATOR_TOKEN", testenv.OperatorToken)

	out, _, err := runCLI(t, "", "push", "--server", env.URL, "test", ok)
	if err != nil || !strings.Contains(out, "\tfcm\tandroid\tsent") || strings.Contains(out, "fcm-ok-token") {
		t.Errorf("push test: %q, %v", out, err)
	}
	// Flags may also follow the command.
	if out, _, err = runCLI(t, "", "push", "test", ok, "--server", env.URL); err != nil || !strings.Contains(out, "\tsent") {
		t.Errorf("push test with the flags last: %q, %v", out, err)
	}
	if n := len(prov.To("fcm-ok-token")); n != 2 {
		t.Errorf("%d test pushes, want 2", n)
	}
	out, _, err = runCLI(t, "", "push", "--server", env.URL, "test", dead)
	if err == nil || !strings.Contains(out, "dead_token") || !strings.Contains(err.Error(), "1 of 1 devices not reached") {
		t.Errorf("dead token: %q, %v", out, err)
	}
	if _, _, err = runCLI(t, "", "push", "--server", env.URL, "test", none); err == nil || !strings.Contains(err.Error(), "no device") {
		t.Errorf("no registrations: %v", err)
	}
	if _, _, err = runCLI(t, "", "push", "--server", env.URL, "test", "nobody"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Errorf("unknown user: %v", err)
	}
	for _, args := range [][]string{{"push", "test"}, {"push", "test", "a", "b"}, {"push", "--", "test", "--server", env.URL}} {
		if _, stderr, err := runCLI(t, "", args...); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr, "klassenfunk push") {
			t.Errorf("%q: usage: %v %q", args, err, stderr)
		}
	}
	t.Setenv("KLASSENFUNK_OPERATOR_TOKEN", "kfop_wrong")
	if _, _, err = runCLI(t, "", "push", "--server", env.URL, "test", ok); err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("wrong operator token: %v", err)
	}
}
