// Package listen opens the TCP and unix-socket listeners of the policy and
// milter servers, decides which peers may use them, and guards them (see
// Guard): accept errors such as EMFILE are waited out rather than ending
// the server, and the connections open at once are bounded, in all and
// per peer address.
package listen

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
)

// Listen opens addr: "host:port" for TCP, "unix:/path" for a unix socket
// created with mode. A stale socket file left by a previous run is removed
// first; a path that exists and is not a socket is an error.
func Listen(addr string, mode fs.FileMode) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		return ln, nil
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: %s exists and is not a socket", addr, path)
		}
		// Remove the socket only if nobody answers on it.
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process is serving that socket", addr)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen on %s: remove stale socket: %w", addr, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: set mode %04o: %w", addr, mode, err)
	}
	return ln, nil
}

// PeerIP returns the IP address of a TCP peer, unmapped; ok is false for
// unix-socket peers, which are not subject to address checks (the socket's
// file mode guards them).
func PeerIP(c net.Conn) (netip.Addr, bool) {
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}
