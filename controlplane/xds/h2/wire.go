package h2

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/metadata"
)

// Frames are written by hand (RFC 9113 section 4.1): a 9-byte header, then the payload.
const frameHeaderLen = 9

// appendFrameHeader appends the header of a frame of length payload bytes.
func appendFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	// A frame's length is at most 2^24-1: callers hold it to the peer's maximum frame size.
	b = binary.BigEndian.AppendUint32(b, uint32(length)<<8|uint32(typ)) //nolint:gosec // G115: see above
	b = append(b, byte(flags))
	return binary.BigEndian.AppendUint32(b, id&0x7fffffff)
}

func appendWindowUpdate(b []byte, id, incr uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return binary.BigEndian.AppendUint32(b, incr&0x7fffffff)
}

func appendRSTStream(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendPing(b []byte, ack bool, data [8]byte) []byte {
	var flags http2.Flags
	if ack {
		flags = http2.FlagPingAck
	}
	b = appendFrameHeader(b, 8, http2.FramePing, flags, 0)
	return append(b, data[:]...)
}

func appendGoAway(b []byte, lastID uint32, code http2.ErrCode, debug string) []byte {
	b = appendFrameHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lastID&0x7fffffff)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}

func appendSettings(b []byte, settings ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

// appendHeaders appends a header block as a HEADERS frame and as many CONTINUATION frames as
// maxFrame requires.
func appendHeaders(b []byte, id uint32, block []byte, endStream bool, maxFrame int) []byte {
	typ := http2.FrameHeaders
	flags := http2.Flags(0)
	if endStream {
		flags = http2.FlagHeadersEndStream
	}
	for {
		n := min(len(block), maxFrame)
		f := flags
		if n == len(block) {
			f |= http2.FlagHeadersEndHeaders // the same bit as CONTINUATION's END_HEADERS
		}
		b = appendFrameHeader(b, n, typ, f, id)
		b = append(b, block[:n]...)
		block = block[n:]
		if len(block) == 0 {
			return b
		}
		typ, flags = http2.FrameContinuation, 0
	}
}

// The header blocks are HPACK (RFC 7541) without the dynamic table: ":status: 200" is the
// static table's entry 8, every other field a literal without indexing, so a connection
// keeps no encoder state.
const indexedStatus200 = 0x80 | 8

// appendField appends a literal header field without indexing, with a new name (section
// 6.2.2), its strings without Huffman coding.
func appendField(b []byte, name, value string) []byte {
	b = append(b, 0)
	b = appendString(b, name)
	return appendString(b, value)
}

// appendStatusField appends ":status" (the static table's name 8) with value, without
// indexing.
func appendStatusField(b []byte, status int) []byte {
	b = appendInt(b, 4, 0, 8)
	return appendString(b, strconv.Itoa(status))
}

func appendString(b []byte, s string) []byte {
	b = appendInt(b, 7, 0, uint64(len(s)))
	return append(b, s...)
}

// appendInt appends v as an HPACK integer with an n-bit prefix, the first byte's other bits
// set to first (section 5.1).
func appendInt(b []byte, n uint, first byte, v uint64) []byte {
	limit := uint64(1)<<n - 1
	if v < limit {
		return append(b, first|byte(v)) //nolint:gosec // G115: v < limit < 256
	}
	b = append(b, first|byte(limit)) //nolint:gosec // G115: limit < 256
	v -= limit
	for v >= 128 {
		b = append(b, byte(v&0x7f)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendMetadata appends md's fields; binary values ("-bin" keys) base64-encoded as gRPC sends
// them.
func appendMetadata(b []byte, md metadata.MD) []byte {
	for k, vs := range md {
		if reservedHeader(k) {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			b = appendField(b, k, v)
		}
	}
	return b
}

// reservedHeader reports whether k is a header that gRPC itself sets, never metadata.
func reservedHeader(k string) bool {
	switch k {
	case "content-type", "user-agent", "grpc-message-type", "grpc-encoding", "grpc-message",
		"grpc-status", "grpc-timeout", "grpc-status-details-bin", "grpc-accept-encoding", "te":
		return true
	}
	return strings.HasPrefix(k, ":")
}

// encodeGRPCMessage percent-encodes msg as gRPC's grpc-message trailer requires: bytes outside
// printable ASCII, and '%'.
func encodeGRPCMessage(msg string) string {
	i := strings.IndexFunc(msg, func(r rune) bool { return r < ' ' || r > '~' || r == '%' })
	if i < 0 {
		return msg
	}
	var sb strings.Builder
	sb.WriteString(msg[:i])
	const hex = "0123456789ABCDEF"
	for j := i; j < len(msg); j++ {
		c := msg[j]
		if c >= ' ' && c <= '~' && c != '%' {
			sb.WriteByte(c)
			continue
		}
		sb.WriteByte('%')
		sb.WriteByte(hex[c>>4])
		sb.WriteByte(hex[c&0xf])
	}
	return sb.String()
}

// parseTimeout parses a grpc-timeout value: at most 8 digits and a unit.
func parseTimeout(s string) (time.Duration, error) {
	if len(s) < 2 || len(s) > 9 {
		return 0, errors.New("h2: malformed grpc-timeout")
	}
	units := map[byte]time.Duration{
		'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond,
	}
	unit, ok := units[s[len(s)-1]]
	if !ok {
		return 0, errors.New("h2: malformed grpc-timeout")
	}
	v, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || v < 0 {
		return 0, errors.New("h2: malformed grpc-timeout")
	}
	if d := time.Duration(v); d <= (1<<63-1)/unit {
		return d * unit, nil
	}
	return 1<<63 - 1, nil
}

// incomingMetadata returns the request's metadata: its regular fields but gRPC's own and
// user-agent, binary values decoded; nil if there are none. A binary value that is not base64
// is an error.
func incomingMetadata(fields []hpack.HeaderField) (metadata.MD, error) {
	var md metadata.MD
	for _, f := range fields {
		if reservedHeader(f.Name) {
			continue
		}
		if md == nil {
			md = metadata.MD{}
		}
		v := f.Value
		if strings.HasSuffix(f.Name, "-bin") {
			d, err := decodeBinHeader(v)
			if err != nil {
				return nil, err
			}
			v = d
		}
		md[f.Name] = append(md[f.Name], v)
	}
	return md, nil
}

func decodeBinHeader(v string) (string, error) {
	if len(v)%4 == 0 {
		b, err := base64.StdEncoding.DecodeString(v)
		return string(b), err
	}
	b, err := base64.RawStdEncoding.DecodeString(v)
	return string(b), err
}

// implements reports whether impl implements the interface that handlerType points to.
func implements(impl, handlerType any) bool {
	ht := reflect.TypeOf(handlerType).Elem()
	return reflect.TypeOf(impl).Implements(ht)
}
