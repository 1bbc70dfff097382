package milter

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// rawMTA imitates an MTA at the byte level, the way Postfix's milter8.c
// and Sendmail's milter.c frame the milter protocol: each packet is a
// 4-byte big-endian length, the command code and its data. Unlike
// go-milter's client it can send packets no real MTA would.
type rawMTA struct {
	t testing.TB
	c net.Conn
}

// dialRaw opens a plain connection to the test server.
func (ts *testServer) dialRaw(t testing.TB) *rawMTA {
	t.Helper()
	c, err := net.DialTimeout(ts.network, ts.addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial milter: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawMTA{t: t, c: c}
}

// pkt frames one packet: code, then data as given (NULs included).
func pkt(code byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	b = append(b, code)
	return append(b, data...)
}

// header frames a bare length prefix, with nothing after it.
func header(length uint32) []byte { return binary.BigEndian.AppendUint32(nil, length) }

// optneg is the SMFIC_OPTNEG packet of a Postfix 3.x MTA: protocol
// version 6, every action (SMFIF_*, 0x1FF) and every protocol step it
// knows (SMFIP_*, 0x1FFFFF); extra bits are OR-ed into the protocol mask
// (SMFIP_MDS_256K, SMFIP_MDS_1M).
func optneg(extraProto uint32) []byte {
	var d [12]byte
	binary.BigEndian.PutUint32(d[0:], 6)
	binary.BigEndian.PutUint32(d[4:], 0x1FF)
	binary.BigEndian.PutUint32(d[8:], 0x1FFFFF|extraProto)
	return pkt(cmdOptNeg, string(d[:]))
}

func (r *rawMTA) write(b []byte) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write to milter: %v", err)
	}
}

// readPacket reads one reply packet: its code and data.
func (r *rawMTA) readPacket() (byte, []byte) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [4]byte
	if _, err := io.ReadFull(r.c, h[:]); err != nil {
		r.t.Fatalf("read reply: %v", err)
	}
	b := make([]byte, binary.BigEndian.Uint32(h[:]))
	if _, err := io.ReadFull(r.c, b); err != nil || len(b) == 0 {
		r.t.Fatalf("read reply body: %v", err)
	}
	return b[0], b[1:]
}

// negotiate sends Postfix's SMFIC_OPTNEG and reads the milter's answer.
func (r *rawMTA) negotiate() {
	r.t.Helper()
	r.write(optneg(0))
	if code, _ := r.readPacket(); code != cmdOptNeg {
		r.t.Fatalf("negotiation answered with %q", code)
	}
}

// closedByServer reads until the server closes the connection and
// reports whether it did (an EOF or reset), rather than a timeout.
func (r *rawMTA) closedByServer() bool {
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, r.c)
	var ne net.Error
	return err == nil || !(errors.As(err, &ne) && ne.Timeout())
}
