package milter

import "bytes"

// Milter command codes (libmilter mfdef.h, SMFIC_*), as the MTA sends them.
const (
	cmdAbort       = 'A' // SMFIC_ABORT
	cmdBody        = 'B' // SMFIC_BODY
	cmdConnect     = 'C' // SMFIC_CONNECT
	cmdMacro       = 'D' // SMFIC_MACRO
	cmdBodyEOB     = 'E' // SMFIC_BODYEOB
	cmdHelo        = 'H' // SMFIC_HELO
	cmdQuitNewConn = 'K' // SMFIC_QUIT_NC
	cmdHeader      = 'L' // SMFIC_HEADER
	cmdMail        = 'M' // SMFIC_MAIL
	cmdEOH         = 'N' // SMFIC_EOH
	cmdOptNeg      = 'O' // SMFIC_OPTNEG
	cmdQuit        = 'Q' // SMFIC_QUIT
	cmdRcpt        = 'R' // SMFIC_RCPT
	cmdData        = 'T' // SMFIC_DATA
	cmdUnknown     = 'U' // SMFIC_UNKNOWN
)

// Protocol mask bits of SMFIC_OPTNEG that announce the MTA's maximum data
// size (libmilter mfdef.h).
const (
	protoMDS256K = 1 << 28 // SMFIP_MDS_256K
	protoMDS1M   = 1 << 29 // SMFIP_MDS_1M
)

// Packet sizes. A packet is a 4-byte big-endian length, then length bytes:
// the command code and its data.
const (
	// maxNegotiationLen caps the first packet, SMFIC_OPTNEG: version,
	// action mask and protocol mask are 12 data bytes; Postfix and
	// Sendmail send no more.
	maxNegotiationLen = 1 << 10

	// headerHeadroom is added to the data size the MTA offered. libmilter
	// refuses a packet over the negotiated size, but neither MTA bounds
	// a header by it: only body chunks are cut to the data size
	// (MILTER_CHUNK_SIZE, 65535). Postfix's milter8_header sends each
	// header whole as one SMFIC_HEADER packet, "name\0value\0", and
	// Postfix's cleanup keeps a header up to header_size_limit (default
	// 102400 bytes for name, colon and value together); the excess is
	// discarded before the milter sees it. So an SMFIC_HEADER packet from
	// a default Postfix holds at most 102400 + 1 data bytes (the colon
	// and the space after it become the first NUL, the second NUL is
	// added), over the 65535 of the default offer. Sendmail keeps all
	// headers of a message together under MaxHeadersLength (default
	// 32768). 64 KiB of headroom puts the cap at 131071 data bytes for
	// the default offer, so every header a default Postfix or Sendmail
	// delivers passes with room to spare, and a hostile peer still
	// cannot make a connection hold more than about 1.1 MiB (the 1M
	// offer plus the headroom).
	headerHeadroom = 64 << 10
)

// maxDataSize is the largest data size (command code excluded) the MTA
// announced in the protocol mask of its SMFIC_OPTNEG, worked out as
// go-milter's session.negotiate does when no negotiation callback is set
// (go-milter then accepts the offer): 1 MiB - 1 with SMFIP_MDS_1M,
// 256 KiB - 1 with SMFIP_MDS_256K, else 64 KiB - 1.
func maxDataSize(protoMask uint32) uint32 {
	switch {
	case protoMask&protoMDS1M == protoMDS1M:
		return 1<<20 - 1
	case protoMask&protoMDS256K == protoMDS256K:
		return 256<<10 - 1
	}
	return 64<<10 - 1
}

// Reasons a packet is refused. They are fixed texts without client data,
// so Options.OnMalformed may use them as a metric label.
const (
	reasonEmpty               = "empty packet"
	reasonTooLarge            = "packet over the negotiated size"
	reasonNegotiationExpected = "first packet is not a negotiation"
	reasonNegotiationShort    = "negotiation shorter than 12 bytes"
	reasonNegotiationRepeated = "negotiation repeated"
	reasonUnknownCommand      = "unknown command code"
	reasonConnectHost         = "connect: host name not NUL-terminated"
	reasonConnectFamily       = "connect: no address family"
	reasonConnectBadFamily    = "connect: unknown address family"
	reasonConnectPort         = "connect: no port"
	reasonConnectAddress      = "connect: address not NUL-terminated"
	reasonHelo                = "helo: name not NUL-terminated"
	reasonMail                = "mail: sender not NUL-terminated"
	reasonRcpt                = "rcpt: recipient not NUL-terminated"
	reasonHeader              = "header: not two NUL-terminated strings"
	reasonMacroCode           = "macro: no command code"
	reasonMacroStrings        = "macro: strings not NUL-terminated pairs"
)

// checkPacket checks the data of one packet (after its command code)
// against libmilter's framing, before go-milter parses it: it returns ""
// when the packet is well formed, else the reason it is not.
// negotiated tells whether SMFIC_OPTNEG was seen: it is the only valid
// first packet, and valid only once.
func checkPacket(negotiated bool, code byte, data []byte) string {
	if !negotiated {
		if code != cmdOptNeg {
			return reasonNegotiationExpected
		}
		if len(data) < 12 { // version, actions, protocol: 3 x uint32
			return reasonNegotiationShort
		}
		return ""
	}
	switch code {
	case cmdOptNeg:
		return reasonNegotiationRepeated
	case cmdConnect:
		return checkConnect(data)
	case cmdHelo:
		return needNUL(data, reasonHelo)
	case cmdMail:
		// "sender\0" then ESMTP arguments, each NUL-terminated.
		return needNUL(data, reasonMail)
	case cmdRcpt:
		return needNUL(data, reasonRcpt)
	case cmdHeader:
		// "name\0value\0": go-milter wants exactly two strings.
		if bytes.Count(data, []byte{0}) != 2 || data[len(data)-1] != 0 {
			return reasonHeader
		}
	case cmdMacro:
		// The command the macros are for, then "name\0value\0" pairs.
		if len(data) == 0 {
			return reasonMacroCode
		}
		if s := data[1:]; len(s) > 0 && (s[len(s)-1] != 0 || bytes.Count(s, []byte{0})%2 != 0) {
			return reasonMacroStrings
		}
	case cmdAbort, cmdBody, cmdBodyEOB, cmdQuitNewConn, cmdEOH, cmdQuit, cmdData, cmdUnknown:
		// No required contents (SMFIC_UNKNOWN's command is read up to a
		// NUL or the end).
	default:
		return reasonUnknownCommand
	}
	return ""
}

// checkConnect checks SMFIC_CONNECT: "host\0", the family byte, and for
// the families 'L' (unix), '4' and '6' a 2-byte port and "address\0";
// 'U' (unknown) has nothing after the family.
func checkConnect(data []byte) string {
	i := bytes.IndexByte(data, 0)
	if i < 0 {
		return reasonConnectHost
	}
	rest := data[i+1:]
	if len(rest) == 0 {
		return reasonConnectFamily
	}
	family, rest := rest[0], rest[1:]
	switch family {
	case 'U':
		return ""
	case 'L', '4', '6':
	default:
		return reasonConnectBadFamily
	}
	if len(rest) < 2 {
		return reasonConnectPort
	}
	return needNUL(rest[2:], reasonConnectAddress) // rest[:2]: the port, any value
}

// needNUL returns reason unless data holds a NUL.
func needNUL(data []byte, reason string) string {
	if bytes.IndexByte(data, 0) < 0 {
		return reason
	}
	return ""
}
