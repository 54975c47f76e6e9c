//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/assert"

	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
)

// outcome is what a client learned of one request.
type outcome int

const (
	outcomeOK       outcome = iota // acknowledged
	outcomeConflict                // HTTP 409: the predecessor was not the current hash; nothing changed
	outcomeRefused                 // certainly not applied: the connection was refused, or another 4xx
	outcomeUnknown                 // no answer, or a 5xx: the write may or may not have happened
)

func (o outcome) String() string {
	return [...]string{"ok", "conflict", "refused", "unknown"}[o]
}

// classify turns a management API client's error into what it says about the request.
func classify(err error) outcome {
	if err == nil {
		return outcomeOK
	}
	var apiErr *mgmtapi.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.Status == http.StatusConflict:
			return outcomeConflict
		case apiErr.Status >= 500:
			return outcomeUnknown
		default:
			return outcomeRefused
		}
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return outcomeRefused // nothing listens: the request was never sent
	}
	return outcomeUnknown
}

// regInput is one operation on a session seen as a register holding its current hash: a read,
// or a predecessor-checked update from Pred to New (a create is an update from "").
type regInput struct {
	Session   string
	Update    bool
	Pred, New string
}

// regOutput is its result: for a read, the hash read.
type regOutput struct {
	Outcome outcome
	Hash    string
}

// sessionModel is the sequential specification of sessions under predecessor-checked updates:
// an acknowledged update found its predecessor current and replaced it; a conflict found
// another hash current and changed nothing; an update of unknown outcome did either, when its
// predecessor was current (and nothing otherwise); a read returns the current hash. The
// history is checked per session.
var sessionModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var names []string
		for _, op := range history {
			s := op.Input.(regInput).Session
			if _, ok := by[s]; !ok {
				names = append(names, s)
			}
			by[s] = append(by[s], op)
		}
		sort.Strings(names)
		out := make([][]porcupine.Operation, 0, len(names))
		for _, s := range names {
			out = append(out, by[s])
		}
		return out
	},
	Init: func() []any { return []any{""} },
	Step: func(state, input, output any) []any {
		cur, in, out := state.(string), input.(regInput), output.(regOutput)
		if !in.Update {
			if out.Hash == cur {
				return []any{cur}
			}
			return nil
		}
		switch out.Outcome {
		case outcomeOK:
			if cur == in.Pred {
				return []any{in.New}
			}
		case outcomeConflict:
			if cur != in.Pred {
				return []any{cur}
			}
		case outcomeUnknown:
			if cur == in.Pred {
				return []any{cur, in.New}
			}
			return []any{cur}
		}
		return nil
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		if !in.Update {
			return fmt.Sprintf("read %s -> %.8s", in.Session, out.Hash)
		}
		return fmt.Sprintf("update %s %.8s -> %.8s: %s", in.Session, in.Pred, in.New, out.Outcome)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%.8s", state.(string)) },
}

// history records the operations of the client loop, with times on one monotonic clock.
// Refused operations are left out (they did nothing); operations of unknown outcome return at
// the end of time, so that the checker may place them anywhere after their call.
type history struct {
	start time.Time

	mu  sync.Mutex
	ops []porcupine.Operation
	// preds maps the hash of every document sent to its predecessor ("" for a create).
	preds map[string]string
	// acked lists, per session, the hashes of the acknowledged updates and creates.
	acked map[string][]string
	// unknown lists, per session, the hashes of updates of unknown outcome.
	unknown map[string][]string
	counts  map[outcome]int // updates by outcome
	reads   int
	// where says, for the hash of each update of unknown outcome, where and when it was sent.
	where map[string]string
}

func newHistory() *history {
	return &history{start: time.Now(), preds: map[string]string{}, acked: map[string][]string{},
		unknown: map[string][]string{}, counts: map[outcome]int{}, where: map[string]string{}}
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

// update records a predecessor-checked update (or a create, with pred "") called at call and
// sent to where, and the error it got.
func (h *history) update(client int, session, pred, next string, call int64, o outcome, where string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.preds[next] = pred
	h.counts[o]++
	ret := h.now()
	switch o {
	case outcomeRefused:
		return
	case outcomeOK:
		h.acked[session] = append(h.acked[session], next)
	case outcomeUnknown:
		h.unknown[session] = append(h.unknown[session], next)
		h.where[next] = fmt.Sprintf("sent to %s at %.1fs, answered at %.1fs: %v", where, float64(call)/1e9, float64(ret)/1e9, err)
		ret = math.MaxInt64
	case outcomeConflict:
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Call: call, Return: ret,
		Input: regInput{Session: session, Update: true, Pred: pred, New: next}, Output: regOutput{Outcome: o}})
}

// read records a successful read.
func (h *history) read(client int, session, hash string, call int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads++
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Call: call, Return: h.now(),
		Input: regInput{Session: session}, Output: regOutput{Outcome: outcomeOK, Hash: hash}})
}

// chain returns the hashes from head back to the session's create, following the
// predecessors of the documents the test sent; it fails on a hash the test never sent.
func (h *history) chain(head string) (map[string]bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	for cur := head; cur != ""; {
		if seen[cur] {
			return nil, fmt.Errorf("the predecessors of %s form a cycle at %s", head, cur)
		}
		seen[cur] = true
		pred, ok := h.preds[cur]
		if !ok {
			return nil, fmt.Errorf("hash %s is no document the test sent", cur)
		}
		cur = pred
	}
	return seen, nil
}

// The checker is only as good as the model: histories that no sequential order explains are
// refused, and an update of unknown outcome may or may not have happened.
func TestSessionModel(t *testing.T) {
	up := func(pred, next string, o outcome, call, ret int64) porcupine.Operation {
		if o == outcomeUnknown {
			ret = math.MaxInt64
		}
		return porcupine.Operation{Call: call, Return: ret, Input: regInput{Session: "s", Update: true, Pred: pred, New: next}, Output: regOutput{Outcome: o}}
	}
	read := func(hash string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Call: call, Return: ret, Input: regInput{Session: "s"}, Output: regOutput{Outcome: outcomeOK, Hash: hash}}
	}
	create := up("", "a", outcomeOK, 0, 1)
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"sequential", []porcupine.Operation{create, up("a", "b", outcomeOK, 2, 3), read("b", 4, 5), up("a", "c", outcomeConflict, 6, 7)}, porcupine.Ok},
		{"stale read after an acknowledged update", []porcupine.Operation{create, up("a", "b", outcomeOK, 2, 3), read("a", 4, 5)}, porcupine.Illegal},
		{"two wins over one predecessor", []porcupine.Operation{create, up("a", "b", outcomeOK, 2, 5), up("a", "c", outcomeOK, 3, 6)}, porcupine.Illegal},
		{"a conflict with the current predecessor", []porcupine.Operation{create, up("a", "b", outcomeConflict, 2, 3)}, porcupine.Illegal},
		{"concurrent read sees either", []porcupine.Operation{create, up("a", "b", outcomeOK, 2, 5), read("a", 3, 4)}, porcupine.Ok},
		{"unknown outcome applied", []porcupine.Operation{create, up("a", "b", outcomeUnknown, 2, 0), read("b", 10, 11)}, porcupine.Ok},
		{"unknown outcome not applied", []porcupine.Operation{create, up("a", "b", outcomeUnknown, 2, 0), read("a", 10, 11), up("a", "c", outcomeOK, 12, 13)}, porcupine.Ok},
		{"unknown outcome with a stale predecessor", []porcupine.Operation{create, up("a", "b", outcomeOK, 2, 3), up("a", "c", outcomeUnknown, 4, 0), read("c", 10, 11)}, porcupine.Illegal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, porcupine.CheckOperationsTimeout(sessionModel.ToModel(), tc.ops, 10*time.Second))
		})
	}
}
