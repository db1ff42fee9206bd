package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// checkEnv names the database file that a process started by checkInChild
// checks. The variable is internal: only checkInChild sets it, for the
// child it starts.
const checkEnv = "KLASSENFUNK_INTERNAL_CHECK_DATABASE"

// checkRecordsEnv, set to 1 beside checkEnv, makes the child decode the
// file's records too (checkRecords).
const checkRecordsEnv = "KLASSENFUNK_INTERNAL_CHECK_RECORDS"

// A process started by checkInChild is this program again (the server,
// or a test binary: every binary that can ask imports this package). It
// checks the file, writes the result to its standard output and exits
// before main runs.
func init() {
	if path := os.Getenv(checkEnv); path != "" {
		os.Exit(serveCheck(path, os.Getenv(checkRecordsEnv) == "1"))
	}
}

// checkResult is what the child writes to its standard output.
type checkResult struct {
	Tombstones  []Tombstone `json:"tombstones"`
	Error       string      `json:"error,omitempty"`
	NotDatabase bool        `json:"not_database,omitempty"`
}

func serveCheck(path string, records bool) int {
	ts, err := readDatabaseFile(path, records)
	res := checkResult{Tombstones: ts}
	if err != nil {
		res.Error, res.NotDatabase = err.Error(), errors.Is(err, ErrNotDatabase)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

// checkError is a failed check as the child reported it.
type checkError struct {
	msg         string
	notDatabase bool
}

func (e *checkError) Error() string { return e.msg }

func (e *checkError) Unwrap() error {
	if e.notDatabase {
		return ErrNotDatabase
	}
	return nil
}

// checkInChild runs readDatabaseFile(path, records) in a child process. A child
// that ends without a result (bbolt panicked or faulted in a goroutine of
// its own) means a damaged file: ErrNotDatabase, with the first line the
// child wrote to its standard error.
func checkInChild(path string, records bool) ([]Tombstone, error) {
	if path == "" { // the child would not know it is one
		return nil, fmt.Errorf("%w: no file named", ErrNotDatabase)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), checkEnv+"="+path, checkRecordsEnv+"=0")
	if records {
		cmd.Env[len(cmd.Env)-1] = checkRecordsEnv + "=1"
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var res checkResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || runErr != nil {
		var exit *exec.ExitError
		switch {
		case runErr == nil:
			return nil, fmt.Errorf("check %s: the checking process gave no result (%v)", path, err)
		case !errors.As(runErr, &exit):
			return nil, fmt.Errorf("check %s: %w", path, runErr)
		}
		why, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		return nil, fmt.Errorf("%s: %w (damaged: the check ended with %q)", path, ErrNotDatabase, why)
	}
	if res.Error != "" {
		return nil, &checkError{msg: res.Error, notDatabase: res.NotDatabase}
	}
	return res.Tombstones, nil
}
