package main

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// serve speaks systemd's notification protocol (sd_notify(3)) over the
// datagram socket $NOTIFY_SOCKET names: with Type=notify, systemd holds
// the unit "activating" until READY=1 (every listener open and served),
// shows it "reloading" between RELOADING=1 and the next READY=1, and
// "deactivating" from STOPPING=1 (draining) on. Without NOTIFY_SOCKET
// nothing is sent.

// notifier tells the service manager about the server's state.
type notifier interface {
	notify(state string) error
}

// The states serve sends; notifyReloading adds the time systemd wants.
const (
	notifyReady    = daemon.SdNotifyReady    // READY=1
	notifyStopping = daemon.SdNotifyStopping // STOPPING=1
)

// notifyReloading returns RELOADING=1 with MONOTONIC_USEC, the
// CLOCK_MONOTONIC time in microseconds, which systemd 253 and later want
// with it to tell this reload from an older one.
func notifyReloading() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return daemon.SdNotifyReloading
	}
	return fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, ts.Nano()/1000)
}

// systemdNotifier sends to $NOTIFY_SOCKET, when it is set.
type systemdNotifier struct{}

func (systemdNotifier) notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// tell sends state through n, if there is one. A failure is logged and
// nothing more: the server serves all the same.
func tell(n notifier, log *slog.Logger, state string) {
	if n == nil {
		return
	}
	if err := n.notify(state); err != nil {
		log.Warn("cannot notify the service manager", slog.String("state", state), slog.Any("error", err))
	}
}

// serviceNotifier puts what serve and its reloader say in order: serve
// says READY=1 and STOPPING=1 through it, the reloader RELOADING=1 and
// READY=1 through reloads(). A reload before the server's first READY=1
// says nothing (systemd would take its READY=1 for the server's), nor does
// anything after STOPPING=1 (a reload that ends while the server drains).
type serviceNotifier struct {
	mu             sync.Mutex
	n              notifier // nil: no one to tell
	ready, stopped bool
}

func newServiceNotifier(n notifier) *serviceNotifier { return &serviceNotifier{n: n} }

func (s *serviceNotifier) notify(state string) error {
	return s.send(false, state)
}

// reloads returns the reloader's notifier.
func (s *serviceNotifier) reloads() notifier { return reloadNotifier{s} }

type reloadNotifier struct{ s *serviceNotifier }

func (r reloadNotifier) notify(state string) error { return r.s.send(true, state) }

func (s *serviceNotifier) send(reload bool, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil || s.stopped || reload && !s.ready {
		return nil
	}
	if !reload {
		s.ready = s.ready || state == notifyReady
		s.stopped = state == notifyStopping
	}
	return s.n.notify(state)
}

var (
	_ notifier = systemdNotifier{}
	_ notifier = (*serviceNotifier)(nil)
	_ notifier = reloadNotifier{}
)
