package admin

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"time"
)

// maxProfileDuration bounds a CPU profile or execution trace.
const maxProfileDuration = 2 * time.Minute

// pprofRoutes adds Go's profiles under /debug/pprof/ in the layout of net/http/pprof, so that
// `go tool pprof http://ADDR/debug/pprof/profile?seconds=10` works. They are written with
// runtime/pprof directly: importing net/http/pprof would also register its handlers on
// http.DefaultServeMux for the whole binary.
func (s *Server) pprofRoutes(mux *http.ServeMux) {
	mux.Handle("GET /debug/pprof/{$}", s.local(http.HandlerFunc(pprofIndex)))
	mux.Handle("GET /debug/pprof/profile", s.local(http.HandlerFunc(cpuProfile)))
	mux.Handle("GET /debug/pprof/trace", s.local(http.HandlerFunc(executionTrace)))
	mux.Handle("GET /debug/pprof/{name}", s.local(http.HandlerFunc(namedProfile)))
}

// local admits only requests from the sidecar's own network namespace: from a loopback address,
// or from the very address the request reached (Linux carries traffic to a host's own address
// over its loopback device, and drops packets from outside that claim a local source address).
// The admin endpoint may listen on a pod address for Prometheus; profiles stay inside the pod.
func (s *Server) local(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fromSameHost(r) {
			s.log.Warn("pprof request refused: not from the sidecar's network namespace", "remote", r.RemoteAddr, "path", r.URL.Path)
			http.Error(w, "pprof is served only to clients in the sidecar's network namespace", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func fromSameHost(r *http.Request) bool {
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	if remote.Addr().Unmap().IsLoopback() {
		return true
	}
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	local, err := netip.ParseAddrPort(la.String())
	return err == nil && local.Addr().Unmap() == remote.Addr().Unmap()
}

func pprofIndex(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintln(w, "profile?seconds=N  CPU profile (default 30 s)")
	_, _ = fmt.Fprintln(w, "trace?seconds=N    execution trace (default 1 s)")
	for _, p := range pprof.Profiles() {
		_, _ = fmt.Fprintf(w, "%-18s %d\n", p.Name(), p.Count())
	}
}

// seconds reads ?seconds=N (default def), at most maxProfileDuration.
func seconds(r *http.Request, def time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get("seconds")
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("seconds: %q is not a positive number", v)
	}
	return min(time.Duration(n*float64(time.Second)), maxProfileDuration), nil
}

func cpuProfile(w http.ResponseWriter, r *http.Request) {
	d, err := seconds(r, 30*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="profile"`)
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, "CPU profile: "+err.Error(), http.StatusConflict)
		return
	}
	sleep(r, d)
	pprof.StopCPUProfile()
}

func executionTrace(w http.ResponseWriter, r *http.Request) {
	d, err := seconds(r, time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="trace"`)
	if err := trace.Start(w); err != nil {
		http.Error(w, "trace: "+err.Error(), http.StatusConflict)
		return
	}
	sleep(r, d)
	trace.Stop()
}

func sleep(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

// namedProfile serves heap, allocs, goroutine, threadcreate, block and mutex; ?debug=N as
// net/http/pprof has it, ?gc=1 collects garbage before a heap profile.
func namedProfile(w http.ResponseWriter, r *http.Request) {
	p := pprof.Lookup(r.PathValue("name"))
	if p == nil {
		http.Error(w, "unknown profile", http.StatusNotFound)
		return
	}
	debug, _ := strconv.Atoi(r.URL.Query().Get("debug"))
	if p.Name() == "heap" && r.URL.Query().Get("gc") == "1" {
		runtime.GC()
	}
	if debug > 0 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename=%q`, p.Name()))
	}
	_ = p.WriteTo(w, debug)
}
