//go:build unix

package messenger

import "syscall"

// socketCapsFrom returns three quarters of the process's open-files limit
// (Go raises the soft limit to the hard one at start): past that, one
// account's sockets are capped, so that it cannot take the last quarter
// of the node's descriptors.
func socketCapsFrom() int { return openFilesLimit() / 4 * 3 }

// socketsCrowdedFrom returns seven eighths of the open-files limit: past
// that, a device keeps only its newest socket.
func socketsCrowdedFrom() int { return openFilesLimit() / 8 * 7 }

func openFilesLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 30
	}
	return int(rl.Cur)
}

// readFD reads once from the socket fd, which never blocks (Go's sockets
// are non-blocking): syscall.EAGAIN when it holds nothing.
func readFD(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// directWrites: a socket's descriptor can be written to (writeFD).
const directWrites = true

// writeFD writes once to the socket fd, which never blocks:
// syscall.EAGAIN when it takes nothing now.
func writeFD(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), p)
		if err != syscall.EINTR {
			if err != nil {
				n = 0
			}
			return n, err
		}
	}
}
