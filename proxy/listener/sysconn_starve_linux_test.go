//go:build linux && !race

package listener

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The helper process plays the outside world for TestSysConnBulkDoesNotStarve: it sends zeros
// to the firehose address as fast as it can, discards what arrives on its sink listener, and
// measures how long the test process takes to echo one byte, every 5 ms for a while; it prints
// the longest round trip in microseconds.
func TestSysConnHelperProcess(t *testing.T) {
	if os.Getenv("SYSCONN_HELPER") != "1" {
		t.Skip("helper process")
	}
	fire := strings.Split(os.Getenv("SYSCONN_FIRE"), ",")
	probe := os.Getenv("SYSCONN_PROBE")
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(2)
	}
	fmt.Println(sinkLn.Addr().String())
	go func() {
		for {
			c, err := sinkLn.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	pc, err := net.Dial("tcp", probe)
	if err != nil {
		os.Exit(2)
	}
	var fcs []net.Conn
	for _, a := range fire {
		c, err := net.Dial("tcp", a)
		if err != nil {
			os.Exit(2)
		}
		fcs = append(fcs, c)
	}
	// Let the test process go idle (its monitor thread asleep), then start the firehoses.
	time.Sleep(300 * time.Millisecond)
	for _, c := range fcs {
		go func() {
			buf := make([]byte, 256<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	var worst time.Duration
	b := make([]byte, 1)
	end := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(end) {
		time.Sleep(5 * time.Millisecond)
		start := time.Now()
		_ = pc.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := pc.Write(b); err != nil {
			worst = 3 * time.Second
			break
		}
		if _, err := io.ReadFull(pc, b); err != nil {
			worst = 3 * time.Second
			break
		}
		worst = max(worst, time.Since(start))
	}
	fmt.Println(worst.Microseconds())
	os.Exit(0)
}

// A sidecar whose every P carries a bulk transfer (data always waiting on the socket) still
// serves its other connections: raw system calls do not wake the runtime's
// monitor thread, which is what preempts a goroutine that never blocks and polls the network
// when every P is busy.
func TestSysConnBulkDoesNotStarve(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(strconv.Itoa(procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			probeLn, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer probeLn.Close()
			var fireLns []net.Listener
			var fireAddrs []string
			for range procs {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				require.NoError(t, err)
				defer ln.Close()
				fireLns = append(fireLns, ln)
				fireAddrs = append(fireAddrs, ln.Addr().String())
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestSysConnHelperProcess$")
			cmd.Env = append(os.Environ(), "SYSCONN_HELPER=1",
				"SYSCONN_FIRE="+strings.Join(fireAddrs, ","), "SYSCONN_PROBE="+probeLn.Addr().String())
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			lines := bufio.NewScanner(out)
			require.True(t, lines.Scan()) // the sink's address, unused here

			// The probe's echo, on a sysConn.
			p, err := probeLn.Accept()
			require.NoError(t, err)
			probe := rawIO(p)
			defer probe.Close()
			go func() { _, _ = io.Copy(writerOnly{probe}, readerOnly{probe}) }()

			// Each firehose read by a loop that never waits for data, hashing what it reads (as a
			// TLS connection decrypts it) slower than the helper writes it.
			for _, ln := range fireLns {
				go func() {
					d, err := ln.Accept()
					if err != nil {
						return
					}
					r := rawIO(d)
					defer r.Close()
					buf := make([]byte, 32<<10)
					h := sha256.New()
					for {
						n, err := r.Read(buf)
						h.Write(buf[:n])
						if err != nil {
							return
						}
					}
				}()
			}
			require.True(t, lines.Scan())
			us, err := strconv.Atoi(lines.Text())
			require.NoError(t, err)
			t.Logf("GOMAXPROCS=%d: longest echo of the probe %v", procs, time.Duration(us)*time.Microsecond)
			require.Less(t, us, 500_000, "the probe's echo waited on the bulk transfers")
		})
	}
}

type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }
