package server_test

import (
	"net/http"
	"strings"
	"testing"

	"klassenfunk/internal/testenv"
)

// GET /users lists the caller's own school, by display name, with no
// logins and nothing of other schools.
func TestDirectory(t *testing.T) {
	env := testenv.New(t)
	a, b := env.CreateSchool("A"), env.CreateSchool("B")
	zoe := env.CreateUser(a, "zoe", "student")   // display name "Zoe"
	anna := env.CreateUser(a, "anna", "teacher") // "Anna"
	env.CreateUser(b, "mallory", "student")
	tok, _ := env.Login("zoe", "phone", true)

	var dir []map[string]string
	r := env.JSON("GET", "/api/v1/users", tok, nil, http.StatusOK, &dir)
	if len(dir) != 2 || dir[0]["id"] != anna || dir[1]["id"] != zoe || dir[0]["role"] != "teacher" || dir[1]["display_name"] != "Zoe" {
		t.Fatalf("directory %s", r.Body)
	}
	for _, leak := range []string{"mallory", "Mallory", `"login"`} {
		if strings.Contains(string(r.Body), leak) {
			t.Fatalf("directory contains %s: %s", leak, r.Body)
		}
	}
	if r := env.Do("GET", "/api/v1/users", "", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("without a credential: %d", r.Status)
	}
}
