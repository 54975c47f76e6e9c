//go:build !attestmesh_sidecar

package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

// newSessionCmd is the `session` verb; its subcommands manage and check sessions.
func newSessionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Check and manage sessions (security policies in the SCONE CAS session language v0.3)",
		Long: `A session is a YAML security policy: which enclaves may run each service, which secrets
the control plane generates or imports for them, and where those secrets appear (command,
environment, injected files) once a workload has been attested.`,
	}
	cmd.AddCommand(newSessionCheckCmd())
	cmd.AddCommand(newSessionManageCmds()...)
	return cmd
}

// sessionCheckConfig holds the flags of `session check`.
type sessionCheckConfig struct {
	files []string
	vars  []string
}

func newSessionCheckCmd() *cobra.Command {
	var cfg sessionCheckConfig
	cmd := &cobra.Command{
		Use:   "check -f FILE [-f FILE ...] [--var NAME=VALUE ...]",
		Short: "Validate sessions offline, together, without a control plane",
		Long: `check validates session files offline and together: each file is expanded with the
--var values ($NAME and ${NAME}; $$SCONE::...$$ placeholders stay untouched), parsed,
validated, and its imports are checked against the exports of the other files.

Every problem is printed as FILE:LINE: field: message. The exit status is 1 if there is any
problem; otherwise check prints "N sessions OK".

Every $NAME in a file must have a --var value. A value is inserted verbatim; values that hold
newlines shift the lines that later problems name.`,
		Example: `  attestmesh session check -f examples/flask-redis/redis-session.yaml \
    -f examples/flask-redis/flask-session.yaml \
    --var REDIS_SESSION=flask-redis/redis --var FLASK_SESSION=flask-redis/flask \
    --var REDIS_MRENCLAVE=$(attestmesh measure $(command -v redis-server)) \
    --var PYTHON_MRENCLAVE=$(attestmesh measure $(command -v python3)) \
    --var ATTESTATION_MODE=simulation`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSessionCheck(cfg, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringArrayVarP(&cfg.files, "file", "f", nil, "session file to check (repeatable)")
	cmd.Flags().StringArrayVar(&cfg.vars, "var", nil, "template variable NAME=VALUE (repeatable)")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func parseVars(list []string) (map[string]string, error) {
	vars := make(map[string]string, len(list))
	for _, kv := range list {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("--var %q: want NAME=VALUE", kv)
		}
		vars[name] = value
	}
	return vars, nil
}

func runSessionCheck(cfg sessionCheckConfig, out io.Writer) error {
	vars, err := parseVars(cfg.vars)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	var (
		sessions []*session.Session
		files    []string
		failed   int
	)
	report := func(file string, err error) {
		failed++
		var se *session.Error
		if !errors.As(err, &se) {
			fmt.Fprintf(out, "%s: %v\n", file, err)
			return
		}
		for _, p := range se.Problems {
			where := file
			if p.Line > 0 {
				where = fmt.Sprintf("%s:%d", file, p.Line)
			}
			if p.Field != "" {
				fmt.Fprintf(out, "%s: %s: %s\n", where, p.Field, p.Msg)
			} else {
				fmt.Fprintf(out, "%s: %s\n", where, p.Msg)
			}
		}
	}
	for _, file := range cfg.files {
		raw, err := os.ReadFile(file)
		if err != nil {
			report(file, err)
			continue
		}
		expanded, err := session.Expand(raw, vars)
		if err != nil {
			report(file, err)
			continue
		}
		s, err := session.Parse(expanded)
		if err != nil {
			report(file, err)
			continue
		}
		sessions = append(sessions, s)
		files = append(files, file)
	}
	for i, err := range session.Check(sessions) {
		if err != nil {
			report(files[i], err)
		}
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("session check: %d of %d files have problems", failed, len(cfg.files))}
	}
	fmt.Fprintf(out, "%d sessions OK\n", len(sessions))
	return nil
}
