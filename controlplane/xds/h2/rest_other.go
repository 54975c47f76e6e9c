//go:build !(linux || darwin)

package h2

import "net"

// rawConn is unused here: a connection's goroutine rests in its TLS read.
type rawConn interface{}

func restable(net.Conn) rawConn { return nil }

func (c *conn) rest() {}
