// Package pgfault puts a TCP proxy between a client and a real PostgreSQL
// server that can fail the way networks fail at the worst moment: it cuts
// a connection right after a COMMIT has reached the server, before the
// server's answer gets back, and it can refuse new connections for a while.
// Everything else passes through unchanged. Tests use it to show that the
// engine tells "stored", "not stored" and "unknown" apart.
package pgfault

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards connections to a PostgreSQL server.
type Proxy struct {
	// ConnString is the server's connection string with the proxy's
	// address.
	ConnString string
	listener   net.Listener
	target     string
	// cutCommits counts the COMMITs still to cut.
	cutCommits atomic.Int64
	// refuseAfterCut makes the next cut also refuse connections (Refuse).
	refuseAfterCut atomic.Bool
	refusing       atomic.Bool
	mu             sync.Mutex
	conns          map[net.Conn]bool
	cut            chan struct{}
}

// Start starts a proxy in front of the server of connString, closed at the
// test's cleanup.
func Start(t testing.TB, connString string) *Proxy {
	t.Helper()
	u, err := url.Parse(connString)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{listener: l, target: u.Host, conns: map[net.Conn]bool{}, cut: make(chan struct{}, 16)}
	u.Host = l.Addr().String()
	p.ConnString = u.String()
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// CutNextCommit makes the proxy forward the next COMMIT to the server and
// then cut that connection, so the client never learns the outcome. With
// refuse, the proxy also starts refusing connections at that moment (as
// Refuse(true)), so the client cannot ask either, until Refuse(false).
func (p *Proxy) CutNextCommit(refuse bool) {
	p.refuseAfterCut.Store(refuse)
	p.cutCommits.Add(1)
}

// Cut is signalled each time a COMMIT was cut.
func (p *Proxy) Cut() <-chan struct{} { return p.cut }

// Refuse makes the proxy close new connections at once (true) or accept
// them again (false); it also cuts the connections open now when
// refusing, as a server that went away would.
func (p *Proxy) Refuse(refuse bool) {
	p.refusing.Store(refuse)
	if refuse {
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	}
}

// Close stops the proxy and cuts every connection.
func (p *Proxy) Close() {
	_ = p.listener.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *Proxy) track(c net.Conn, open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if open {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		if p.refusing.Load() {
			_ = client.Close()
			continue
		}
		go p.serve(client)
	}
}

func (p *Proxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	defer func() {
		_ = client.Close()
		_ = server.Close()
		p.track(client, false)
		p.track(server, false)
	}()
	// The server's answers are relayed as they come, until the client side
	// is cut; after that, the first answer (the COMMIT's) is swallowed and
	// signalled.
	c := &cutter{answered: make(chan struct{})}
	go c.relayServer(client, server)
	_ = p.relayClient(client, server, c)
}

// cutter stops the server's answers from reaching a cut client.
type cutter struct {
	cut      atomic.Bool
	answered chan struct{}
	once     sync.Once
}

func (c *cutter) relayServer(client, server net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if c.cut.Load() {
				c.once.Do(func() { close(c.answered) })
			} else if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = client.Close()
			return
		}
	}
}

// relayClient forwards the client's messages one by one (the startup
// message, then typed messages), cutting the connection after a COMMIT
// when one is due.
func (p *Proxy) relayClient(client, server net.Conn, c *cutter) error {
	// The startup message: length (4 bytes, itself included), payload.
	var head [4]byte
	if _, err := io.ReadFull(client, head[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n < 4 {
		return errors.New("bad startup length")
	}
	startup := make([]byte, n-4)
	if _, err := io.ReadFull(client, startup); err != nil {
		return err
	}
	if _, err := server.Write(append(head[:], startup...)); err != nil {
		return err
	}
	for {
		var typed [5]byte // type, length
		if _, err := io.ReadFull(client, typed[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(typed[1:])
		if n < 4 {
			return errors.New("bad message length")
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(client, body); err != nil {
			return err
		}
		// pgx sends COMMIT as a simple query ('Q').
		commit := typed[0] == 'Q' && strings.EqualFold(string(bytes.TrimRight(body, "\x00")), "commit") && p.takeCut()
		if commit {
			c.cut.Store(true) // before the server can answer it
		}
		if _, err := server.Write(append(typed[:], body...)); err != nil {
			return err
		}
		if commit {
			// The server has the COMMIT; the client gets no answer. The
			// server side stays open until the server has answered, so it
			// commits rather than seeing its client vanish first.
			if p.refuseAfterCut.Swap(false) {
				p.refusing.Store(true)
				p.mu.Lock()
				for other := range p.conns {
					if other != server {
						_ = other.Close()
					}
				}
				p.mu.Unlock()
			}
			_ = client.Close()
			select {
			case <-c.answered:
			case <-time.After(5 * time.Second):
			}
			select {
			case p.cut <- struct{}{}:
			default:
			}
			return errors.New("cut after COMMIT")
		}
	}
}

func (p *Proxy) takeCut() bool {
	for {
		n := p.cutCommits.Load()
		if n <= 0 {
			return false
		}
		if p.cutCommits.CompareAndSwap(n, n-1) {
			return true
		}
	}
}
