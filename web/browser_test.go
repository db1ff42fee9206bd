package web_test

// Browser tests: Debian's headless chromium, driven with chromedp, against
// a real node. make test installs chromium when it is missing
// (scripts/test-deps.sh); a missing chromium fails these tests, it never
// skips them.

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/push/pushtest"
	"klassenfunk/server"
)

var (
	update = flag.Bool("update", false, "write docs/settings.png from TestScreenshot")
	shots  = flag.String("screenshots", "", "also copy every screenshot into this directory (the test's temp dir goes away with it)")
)

// chromiumPath finds Debian's chromium or fails the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/chromium", "/usr/lib/chromium/chromium"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: run `make test`, which installs Debian's chromium (scripts/test-deps.sh), or `apt-get install chromium`")
	return ""
}

// page is one headless browser tab on a test node.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string // the node's URL
	dir  string // screenshots, downloads

	mu       sync.Mutex
	requests []string // every URL the page asked for
	problems []string // script exceptions, console errors, CSP violations
}

// newPage starts chromium with a fresh profile. It is closed with the test;
// on failure a screenshot of the last state is kept.
func newPage(t *testing.T, base string) *page {
	t.Helper()
	exe := chromiumPath(t)
	dir := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,InterestFeedContentSuggestions"),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(1000, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	p := &page{t: t, ctx: ctx, base: base, dir: dir}
	t.Cleanup(func() {
		if t.Failed() {
			p.screenshot("failure")
		}
		cancelCtx()
		cancelAlloc()
	})
	// Start the browser, then watch what the page does.
	run := func() error { return chromedp.Do(ctx) }
	if err := withTimeout(20*time.Second, run); err != nil {
		t.Fatalf("start chromium (%s): %v", exe, err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			p.requests = append(p.requests, ev.Request.URL)
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if ex := ev.ExceptionDetails.Exception; ex != nil && ex.Description != "" {
				msg += " " + ex.Description
			}
			p.problems = append(p.problems, "exception: "+msg)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				p.problems = append(p.problems, fmt.Sprintf("console.error: %v", ev.Args))
			}
		case *cdplog.EventEntryAdded:
			// Failed loads (the 401 of the first GET /me) are the
			// page's business; everything else (CSP violations,
			// script errors) is a problem.
			if ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source != cdplog.EntrySourceNetwork {
				p.problems = append(p.problems, fmt.Sprintf("%s: %s", ev.Entry.Source, ev.Entry.Text))
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.checkClean)
	return p
}

func withTimeout(d time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("timed out after %v", d)
	}
}

// checkClean fails the test when the page threw, logged an error, broke its
// CSP or asked anybody but its own origin for anything.
func (p *page) checkClean() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.problems {
		p.t.Errorf("page problem: %s", pr)
	}
	for _, u := range p.requests {
		if !strings.HasPrefix(u, p.base+"/") && !strings.HasPrefix(u, "blob:"+p.base+"/") && !strings.HasPrefix(u, "data:") {
			p.t.Errorf("the page asked another origin: %s", u)
		}
	}
}

// do runs actions; a failure ends the test.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// text returns the text of the first element that matches css, once it is
// visible.
func (p *page) text(css string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css), chromedp.NodeVisible))
	if err != nil {
		p.t.Fatalf("text of %s: %v", css, err)
	}
	return strings.TrimSpace(s)
}

// eval evaluates a JavaScript expression (awaiting a promise).
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it is true.
func (p *page) waitFor(what, cond string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		p.t.Fatalf("waiting for %s (%s): %v; status %q, error %q", what, cond, err,
			eval[string](p, `document.getElementById('status').textContent`),
			eval[string](p, `document.getElementById('error').textContent`))
	}
}

// screenshot saves a full-page PNG under the test's temp dir and returns it.
func (p *page) screenshot(name string) []byte {
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return nil
	}
	path := filepath.Join(p.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Errorf("save screenshot: %v", err)
	}
	p.t.Logf("screenshot: %s", path)
	if *shots != "" {
		if err := os.MkdirAll(*shots, 0o755); err == nil {
			os.WriteFile(filepath.Join(*shots, p.t.Name()+"-"+name+".png"), png, 0o644)
		}
	}
	return png
}

// open loads the settings page and waits for the script to be ready.
func (p *page) open() {
	p.t.Helper()
	p.do("open /settings", chromedp.Navigate(p.base+"/settings"))
	p.waitFor("the page script", `document.body.classList.contains('ready')`)
}

// login fills in the login form and waits for the settings.
func (p *page) login(login, password string) {
	p.t.Helper()
	p.do("log in",
		chromedp.WaitVisible(chromedp.ID("login-name")),
		chromedp.SendKeys(chromedp.ID("login-name"), login),
		chromedp.SendKeys(chromedp.ID("login-password"), password),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("app-view")),
	)
	p.waitFor("the settings", `document.getElementById('whoami').textContent !== ''`)
}

// confirm presses the dialog's confirm button, after typing the password
// when one is given.
func (p *page) confirm(password string) {
	p.t.Helper()
	actions := []chromedp.Action[chromedp.Void]{chromedp.WaitVisible(chromedp.CSS("dialog#confirm[open]"))}
	if password != "" {
		actions = append(actions, chromedp.SendKeys(chromedp.ID("confirm-password"), password))
	}
	actions = append(actions, chromedp.Click(chromedp.ID("confirm-ok")), chromedp.WaitNotVisible(chromedp.ID("confirm")))
	p.do("confirm", actions...)
}

// pushOpt points the node's push relay at a fake FCM, so that a device can
// register for push through the API.
func pushOpt(prov *pushtest.Server) testenv.Option {
	return func(c *server.Config) {
		c.Push.CAFile = prov.CAFile
		c.Push.FCMCredentials, c.Push.FCMEndpoint = prov.ServiceAccountFile, prov.FCMEndpoint()
	}
}

// registerPush gives d a push registration through PUT /api/v1/push.
func (f *fixture) registerPush(d device) {
	f.t.Helper()
	f.e.JSON("PUT", "/api/v1/push", d.token, map[string]string{
		"provider": "fcm", "token": "fcm-" + d.id + ":APA91b" + strings.Repeat("x", 40),
	}, http.StatusOK, nil)
}

func trustByID(list []struct {
	ID   string `json:"id"`
	Push bool   `json:"push"`
}, id string) (push, found bool) {
	for _, tr := range list {
		if tr.ID == id {
			return tr.Push, true
		}
	}
	return false, false
}

// TestBrowserDevices: log in, see both devices, revoke one (its token gets
// 401, its open WebSocket is closed with 4401), stop the pushes of the
// other.
func TestBrowserDevices(t *testing.T) {
	t.Parallel()
	prov := pushtest.New(t)
	f := newFixture(t, pushOpt(prov))
	f.registerPush(f.tablet)
	ws := f.e.Dial(f.phone.token)

	p := newPage(t, f.e.URL)
	p.open()
	p.login(f.login, password(f.login))
	p.waitFor("two devices", `document.querySelectorAll('#device-list li.card').length === 2`)
	for _, d := range []device{f.phone, f.tablet} {
		sel := fmt.Sprintf(`#device-list li[data-trust-id=%q]`, d.trustID)
		if got := p.text(sel + " h3"); got != d.name {
			t.Errorf("device %s is shown as %q, want %q", d.id, got, d.name)
		}
	}
	if got := p.text(fmt.Sprintf(`li[data-trust-id=%q] dd.push`, f.tablet.trustID)); got != "on" {
		t.Errorf("tablet notifications %q, want on", got)
	}
	if n := eval[int](p, fmt.Sprintf(`document.querySelectorAll('li[data-trust-id=%q] button.stop-push').length`, f.phone.trustID)); n != 0 {
		t.Errorf("the phone without push registration has a stop-pushes button")
	}
	if n := eval[int](p, `document.querySelectorAll('#login-rows tr').length`); n != 3 {
		t.Errorf("%d logins listed, want 3 (two devices, this browser)", n)
	}
	if got := p.text(`#login-rows tr:first-child td:nth-child(2)`); got != "127.0.0.0" {
		t.Errorf("newest login address %q, want the anonymised 127.0.0.0", got)
	}
	if got := eval[[]string](p, `Object.keys(localStorage)`); len(got) != 0 {
		t.Errorf("localStorage keys %q, want none", got)
	}
	p.screenshot("devices")

	// A cancelled confirmation changes nothing.
	revoke := fmt.Sprintf(`li[data-trust-id=%q] button.revoke`, f.phone.trustID)
	p.do("cancel a revocation",
		chromedp.Click(chromedp.CSS(revoke)),
		chromedp.WaitVisible(chromedp.CSS("dialog#confirm[open]")),
		chromedp.Click(chromedp.ID("confirm-cancel")),
		chromedp.WaitNotVisible(chromedp.ID("confirm")),
	)
	if r := f.e.Do("GET", "/api/v1/me", f.phone.token, nil); r.Status != http.StatusOK {
		t.Fatalf("cancelled revocation: phone token %d", r.Status)
	}

	// Revoke the phone, opening its confirmation in the same task that
	// cancels an earlier one: the cancelled dialog's close event then
	// arrives while the new one is open and must not end it.
	p.do("reopen at once and revoke the phone",
		chromedp.Click(chromedp.CSS(revoke)),
		chromedp.WaitVisible(chromedp.CSS("dialog#confirm[open]")),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById('confirm-cancel').click(); document.querySelector(%q).click(); undefined`, revoke)),
	)
	p.confirm("")
	p.do("wait for the phone to go", chromedp.WaitNotPresent(chromedp.CSS(fmt.Sprintf(`li[data-trust-id=%q]`, f.phone.trustID))))
	if got := eval[string](p, `document.getElementById('error').textContent`); got != "" {
		t.Fatalf("error after revocation %q: the cancelled dialog must not revoke too", got)
	}
	if got := p.text("#status"); !strings.Contains(got, "Pixel 8") {
		t.Errorf("status after revocation %q", got)
	}
	if r := f.e.Do("GET", "/api/v1/me", f.phone.token, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("revoked token: %d, want 401", r.Status)
	}
	if code := ws.CloseCode(2 * time.Second); code != int(proto.CloseUnauthorized) {
		t.Errorf("revoked device's WebSocket closed with %d, want %d", code, proto.CloseUnauthorized)
	}

	// Stop the tablet's pushes.
	p.do("stop pushes", chromedp.Click(chromedp.CSS(fmt.Sprintf(`li[data-trust-id=%q] button.stop-push`, f.tablet.trustID))))
	p.confirm("")
	p.waitFor("notifications off", fmt.Sprintf(`document.querySelector('li[data-trust-id=%q] dd.push').textContent === 'off'`, f.tablet.trustID))
	// By now any second revocation from a cancelled dialog would have
	// reached the server too: there must have been exactly one.
	if n := routeRequests(t, f.e, "DELETE /api/v1/trust/{id}"); n != 1 {
		t.Fatalf("%v DELETE /trust requests, want exactly 1 (the cancelled dialog revoked too)", n)
	}
	var list []struct {
		ID   string `json:"id"`
		Push bool   `json:"push"`
	}
	f.e.JSON("GET", "/api/v1/trust", f.tablet.token, nil, http.StatusOK, &list)
	if push, found := trustByID(list, f.tablet.trustID); !found || push {
		t.Errorf("tablet after stop pushes: found %v, push %v; want it kept without push", found, push)
	}
	if r := f.e.Do("GET", "/api/v1/me", f.tablet.token, nil); r.Status != http.StatusOK {
		t.Errorf("tablet token after stop pushes: %d, want 200", r.Status)
	}
	p.screenshot("after")
}

// TestBrowserExport downloads the export and opens the ZIP.
func TestBrowserExport(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := newPage(t, f.e.URL)
	p.open()
	p.login(f.login, password(f.login))

	downloads := filepath.Join(p.dir, "downloads")
	if err := os.MkdirAll(downloads, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(p.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: new(true),
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	begin := chromedp.Events(ctx, browser.DownloadWillBegin)
	progress := chromedp.Events(ctx, browser.DownloadProgress)
	p.do("export", chromedp.Click(chromedp.ID("export")))

	var name string
	for ev, err := range begin {
		if err != nil {
			t.Fatalf("no download began: %v", err)
		}
		name = ev.SuggestedFilename
		break
	}
	var file string
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("download did not complete: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("download cancelled")
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			file = filepath.Join(downloads, ev.GUID)
			break
		}
	}
	if !strings.HasPrefix(name, "klassenfunk-export") || !strings.HasSuffix(name, ".zip") {
		t.Errorf("download named %q, want klassenfunk-export….zip", name)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("the export is no ZIP: %v", err)
	}
	files := map[string][]byte{}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if strings.HasSuffix(zf.Name, ".json") && !json.Valid(buf.Bytes()) {
			t.Errorf("%s is not JSON", zf.Name)
		}
		files[zf.Name] = buf.Bytes()
	}
	if !bytes.Contains(files["profile.json"], []byte(f.login)) {
		t.Errorf("profile.json %q lacks the login; files %v", files["profile.json"], mapsKeys(files))
	}
	if !bytes.Contains(files["devices.json"], []byte(f.tablet.name)) {
		t.Errorf("devices.json %q lacks the tablet", files["devices.json"])
	}
	p.waitFor("the done message", `document.getElementById('status').textContent !== ''`)
	p.screenshot("export")
}

func mapsKeys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestBrowserErase erases the account (a wrong password first) and checks
// that logging in fails afterwards.
func TestBrowserErase(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := newPage(t, f.e.URL)
	p.open()
	p.login(f.login, password(f.login))

	p.do("erase with a wrong password", chromedp.Click(chromedp.ID("erase")))
	p.confirm("not my password")
	p.waitFor("the wrong-password message", `document.getElementById('error').textContent.includes('wrong')`)
	if r := f.e.Do("GET", "/api/v1/me", f.phone.token, nil); r.Status != http.StatusOK {
		t.Fatalf("after a wrong erase password the account is gone: %d", r.Status)
	}

	p.do("erase", chromedp.Click(chromedp.ID("erase")))
	p.confirm(password(f.login))
	p.do("back at the login", chromedp.WaitVisible(chromedp.ID("login-view")))
	p.waitFor("the erased message", `document.getElementById('status').textContent.includes('erased')`)
	p.screenshot("erased")

	r := f.e.Do("POST", "/api/v1/login", "", map[string]any{
		"login": f.login, "client_hash": clientHash(f.login, password(f.login)),
		"device": map[string]any{"id": "new-phone", "name": "New", "os": "android", "personal": true},
	})
	if r.Status != http.StatusUnauthorized {
		t.Errorf("login after erasure: %d %s, want 401", r.Status, r.Body)
	}
	for _, d := range []device{f.phone, f.tablet} {
		if r := f.e.Do("GET", "/api/v1/me", d.token, nil); r.Status != http.StatusUnauthorized {
			t.Errorf("%s token after erasure: %d, want 401", d.id, r.Status)
		}
	}
	// The page's own cookie no longer works either.
	if got := eval[int](p, `fetch('/api/v1/me', {credentials: 'same-origin'}).then(r => r.status)`); got != http.StatusUnauthorized {
		t.Errorf("page's cookie after erasure: %d, want 401", got)
	}
}

// TestBrowserLanguageAndErrors: a wrong password is reported, the language
// switches to German and stays so, the cookie cannot be read by scripts,
// the country section says why it is off, and logout ends the session.
func TestBrowserLanguageAndErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := newPage(t, f.e.URL)
	p.open()
	if got := eval[string](p, `document.documentElement.lang`); got != "en" {
		t.Errorf("lang %q for an English browser", got)
	}
	p.do("wrong password",
		chromedp.SendKeys(chromedp.ID("login-name"), f.login),
		chromedp.SendKeys(chromedp.ID("login-password"), "wrong"),
		chromedp.Click(chromedp.ID("login-submit")),
	)
	p.waitFor("the error", `document.getElementById('error').textContent === 'Wrong login or password.'`)

	p.do("switch to German", chromedp.Click(chromedp.ID("lang-toggle")))
	if got := p.text("h1"); got != "Kontoeinstellungen" {
		t.Errorf("h1 after switching %q", got)
	}
	p.open() // reload: the choice is kept
	if got := p.text("h1"); got != "Kontoeinstellungen" {
		t.Errorf("h1 after reload %q", got)
	}
	if got := eval[string](p, `document.documentElement.lang`); got != "de" {
		t.Errorf("lang %q after switching", got)
	}
	p.login(f.login, password(f.login))
	if got := p.text("#devices-heading"); got != "Geräte" {
		t.Errorf("devices heading %q", got)
	}
	if got := eval[string](p, `document.cookie`); got != "" {
		t.Errorf("document.cookie = %q: the session cookie must be HttpOnly", got)
	}
	if got := eval[[]string](p, `Object.keys(localStorage)`); len(got) != 1 || got[0] != "kf.lang" {
		t.Errorf("localStorage keys %q, want only the language choice", got)
	}

	// Keyboard: Tab reaches a revoke button, Enter opens the dialog with
	// the focus on Cancel, Escape closes it and the focus goes back.
	const onRevoke = `document.activeElement.classList.contains('revoke')`
	p.do("focus the page", chromedp.Evaluate[chromedp.Void](`document.getElementById('main').focus()`))
	for i := 0; !eval[bool](p, onRevoke); i++ {
		if i == 30 {
			t.Fatalf("30 tabs did not reach a revoke button; focus on %s", eval[string](p, `document.activeElement.outerHTML`))
		}
		p.do("tab", chromedp.KeyEvent(kb.Tab))
	}
	p.do("enter", chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.CSS("dialog#confirm[open]")))
	if got := eval[string](p, `document.activeElement.id`); got != "confirm-cancel" {
		t.Errorf("focus in the dialog on %q, want the cancel button", got)
	}
	p.do("escape", chromedp.KeyEvent(kb.Escape), chromedp.WaitNotVisible(chromedp.ID("confirm")))
	if !eval[bool](p, onRevoke) {
		t.Errorf("focus after the dialog on %s, want the revoke button", eval[string](p, `document.activeElement.outerHTML`))
	}
	if n := eval[int](p, `document.querySelectorAll('#device-list li.card').length`); n != 2 {
		t.Errorf("%d devices after Escape, want 2", n)
	}
	// No GeoIP database on the test node: the section is off, with a note.
	p.waitFor("the country note", `!document.getElementById('countries-note').hidden`)
	if !eval[bool](p, `document.getElementById('countries-fieldset').disabled`) {
		t.Error("country restriction is enabled without a GeoIP database")
	}
	if got := p.text("#countries-note"); !strings.Contains(got, "Standort-Datenbank") {
		t.Errorf("country note %q", got)
	}
	p.screenshot("german")

	p.do("log out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-view")))
	if got := eval[int](p, `fetch('/api/v1/me', {credentials: 'same-origin'}).then(r => r.status)`); got != http.StatusUnauthorized {
		t.Errorf("after logout GET /me: %d, want 401", got)
	}
	// Nothing of the user stays in the page, hidden or not (a shared
	// computer): not the name, the devices, the login history.
	html := eval[string](p, `document.documentElement.outerHTML`)
	for _, s := range []string{f.login, f.phone.name, f.tablet.name} {
		if strings.Contains(html, s) {
			t.Errorf("after logout the page still holds %q", s)
		}
	}
	if n := eval[int](p, `document.querySelectorAll('#device-list > *, #login-rows > *').length`); n != 0 {
		t.Errorf("after logout the page still holds %d devices and logins", n)
	}
	if got := eval[string](p, `document.getElementById('login-name').value`); got != "" {
		t.Errorf("after logout the login field holds %q", got)
	}
}

// fromAddr makes every request of the page carry X-Forwarded-For: addr (the
// GeoIP test node trusts loopback as a proxy), so that the node locates the
// browser there.
func (p *page) fromAddr(addr string) {
	p.t.Helper()
	if _, err := chromedp.Call(p.ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"X-Forwarded-For": addr},
	}); err != nil {
		p.t.Fatal(err)
	}
}

// countries reads the restriction through the API, from a German address.
func (f *fixture) countries(token string) []string {
	f.t.Helper()
	r := do(f.t, f.e.URL, nil, request{method: "GET", path: "/api/v1/me/countries",
		header: map[string]string{"Authorization": "Bearer " + token, "X-Forwarded-For": germanAddr}})
	var out struct {
		Allowed []string `json:"allowed"`
		GeoIP   bool     `json:"geoip"`
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &out) != nil || !out.GeoIP {
		f.t.Fatalf("GET /me/countries: %d %s", r.status, r.body)
	}
	return out.Allowed
}

// germanAddr is located in DE by testenv's GeoIP database.
const germanAddr = "203.0.113.7"

// TestBrowserCountries sets and removes a country restriction on a node
// with a GeoIP database.
func TestBrowserCountries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.WithGeoIP(testenv.GeoIP(t, nil)))
	p := newPage(t, f.e.URL)
	p.fromAddr(germanAddr)
	p.open()
	p.login(f.login, password(f.login))
	p.waitFor("the country form", `!document.getElementById('countries-fieldset').disabled`)
	if !eval[bool](p, `document.getElementById('countries-note').hidden`) {
		t.Error("country note shown although the node has a GeoIP database")
	}

	// A malformed list is refused by the page.
	p.do("bad codes",
		chromedp.SendKeys(chromedp.ID("countries-list"), "Germany"),
		chromedp.Click(chromedp.ID("countries-save")),
	)
	p.waitFor("the error", `document.getElementById('error').textContent.includes('country code')`)
	if got := f.countries(f.tablet.token); got != nil {
		t.Fatalf("restriction after a refused list: %v", got)
	}

	p.do("set DE and AT",
		chromedp.Evaluate[chromedp.Void](`document.getElementById('countries-list').value = ''`),
		chromedp.SendKeys(chromedp.ID("countries-list"), "de, at"),
		chromedp.Click(chromedp.ID("countries-save")),
	)
	p.waitFor("saved", `document.getElementById('status').textContent.includes('DE, AT')`)
	if got := f.countries(f.tablet.token); strings.Join(got, ",") != "AT,DE" {
		t.Errorf("restriction %v, want [AT DE]", got)
	}
	p.open() // the page shows what is stored
	if got := eval[string](p, `document.getElementById('countries-list').value`); got != "AT, DE" {
		t.Errorf("country list after reload %q", got)
	}
	if !eval[bool](p, `document.getElementById('countries-only').checked`) {
		t.Error("'only these countries' not selected after reload")
	}
	p.screenshot("restricted")

	p.do("allow all", chromedp.Click(chromedp.ID("countries-all")), chromedp.Click(chromedp.ID("countries-save")))
	p.waitFor("saved", `document.getElementById('status').textContent === 'Logins are allowed from all countries.'`)
	if got := f.countries(f.tablet.token); got != nil {
		t.Errorf("restriction %v after allowing all, want none", got)
	}
}

// TestScreenshot shows a realistic account and keeps its screenshot; with
// -update it writes docs/settings.png for the README. It also checks the
// page at phone width: nothing wider than the screen.
func TestScreenshot(t *testing.T) {
	t.Parallel()
	prov := pushtest.New(t)
	e := testenv.New(t, pushOpt(prov), testenv.WithGeoIP(testenv.GeoIP(t, nil)))
	f := &fixture{t: t, e: e, login: "frau.meyer"}
	f.school = e.CreateSchool("Gymnasium Musterstadt")
	f.userID = f.createUser(f.login, "Frau Meyer", "teacher")
	from := func(addr string) map[string]string { return map[string]string{"X-Forwarded-For": addr} }
	loginFrom := func(addr string, d device) device {
		r := do(t, e.URL, nil, request{method: "POST", path: "/api/v1/login", header: from(addr), body: map[string]any{
			"login": f.login, "client_hash": clientHash(f.login, password(f.login)),
			"device": map[string]any{"id": d.id, "name": d.name, "os": d.os, "personal": true},
		}})
		var out struct {
			Credential struct{ Token string }
			TrustID    string `json:"trust_id"`
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &out) != nil {
			t.Fatalf("login %s: %d %s", d.id, r.status, r.body)
		}
		d.token, d.trustID = out.Credential.Token, out.TrustID
		return d
	}
	loginFrom("203.0.113.41", device{id: "mbp", name: "MacBook (Schule)", os: "macos"})
	e.Clock.Advance(26 * time.Hour)
	iphone := loginFrom("203.0.113.77", device{id: "iphone", name: "Dienst-iPhone", os: "ios"})
	f.registerPush(iphone)
	e.Clock.Advance(3*24*time.Hour + 5*time.Hour)
	// Somebody guesses twice, then the owner logs in a new phone.
	for range 2 {
		do(t, e.URL, nil, request{method: "POST", path: "/api/v1/login", header: from("198.51.100.23"), body: map[string]any{
			"login": f.login, "client_hash": clientHash(f.login, "sommer2026"),
			"device": map[string]any{"id": "x", "name": "x", "os": "android", "personal": true},
		}})
	}
	e.Clock.Advance(40 * time.Minute)
	pixel := loginFrom("203.0.113.9", device{id: "pixel", name: "Pixel 8", os: "android"})
	f.registerPush(pixel)
	do(t, e.URL, nil, request{method: "PUT", path: "/api/v1/me/countries", header: map[string]string{"Authorization": "Bearer " + pixel.token, "X-Forwarded-For": germanAddr},
		body: map[string]any{"allowed": []string{"DE", "AT"}}})
	e.Clock.Advance(2 * time.Hour)
	do(t, e.URL, nil, request{method: "GET", path: "/api/v1/me", header: map[string]string{"Authorization": "Bearer " + iphone.token, "X-Forwarded-For": germanAddr}})
	e.Clock.Advance(15 * time.Minute)

	p := newPage(t, e.URL)
	p.fromAddr(germanAddr)
	if _, err := chromedp.Call(p.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Europe/Berlin"}); err != nil {
		t.Fatal(err)
	}
	p.open()
	p.login(f.login, password(f.login))
	p.waitFor("three devices", `document.querySelectorAll('#device-list li.card').length === 3`)
	p.waitFor("the country form", `!document.getElementById('countries-fieldset').disabled`)
	p.do("blur", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
	png := p.screenshot("settings")
	if len(png) == 0 {
		t.Fatal("no screenshot")
	}
	if len(png) > 300<<10 {
		t.Errorf("screenshot has %d KiB, keep it under 300 KiB", len(png)>>10)
	}
	if *update {
		if err := os.WriteFile(filepath.Join("..", "docs", "settings.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("wrote docs/settings.png")
	}

	// Phone width: no horizontal scrolling, buttons big enough to tap.
	p.do("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	p.open()
	p.waitFor("three devices", `document.querySelectorAll('#device-list li.card').length === 3`)
	if w := eval[int](p, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("page is %d px wide at a 390 px phone screen", w)
	}
	if small := eval[[]string](p, `Array.from(document.querySelectorAll('button')).filter(b => b.offsetParent && b.getBoundingClientRect().height < 40).map(b => b.id || b.textContent)`); len(small) > 0 {
		t.Errorf("buttons too small to tap on a phone: %q", small)
	}
	p.screenshot("phone")
}

// routeRequests counts the requests the node served on one route.
func routeRequests(t *testing.T, e *testenv.Env, route string) float64 {
	t.Helper()
	mfs, err := e.Srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "klassenfunk_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() == route {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}
