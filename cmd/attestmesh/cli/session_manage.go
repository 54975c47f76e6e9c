//go:build !attestmesh_sidecar

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

// newSessionManageCmds returns create, update, get, list and delete.
func newSessionManageCmds() []*cobra.Command {
	return []*cobra.Command{
		newSessionUploadCmd("create", "Create a session on the control plane (you become its CREATOR)", false),
		newSessionUploadCmd("update", "Update a session; the document's predecessor must be the current hash", true),
		newSessionGetCmd(),
		newSessionListCmd(),
		newSessionDeleteCmd(),
	}
}

func newSessionDeleteCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a session (its updaters, or its namespace's, may)",
		Long: `delete removes session NAME and its secrets from the control plane. Its updaters may delete
it, and so may the updaters of its namespace session, so that a namespace's owner can clear
out what others created in it. A session with sessions in its namespace is deleted after
them. Workloads of a deleted session fail their next attestation or renewal, and sessions
that import its secrets fail theirs.`,
		Example: `  attestmesh session delete flask-redis/flask --ca-file ca.pem`,
		Args:    cobra.ExactArgs(1),
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.Delete(ctx, args[0]); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "session %s deleted\n", args[0])
			return err
		}),
	}
	cf.register(cmd.Flags())
	return cmd
}

func newSessionUploadCmd(verb, short string, update bool) *cobra.Command {
	var cf clientFlags
	var file string
	var vars []string
	cmd := &cobra.Command{
		Use:   verb + " -f FILE [--var NAME=VALUE ...]",
		Short: short,
		Long: short + `.

The file is expanded with the --var values ($NAME, ${NAME}) and uploaded over the management
API, authenticated with your client identity (--identity-dir). The answer names the session's
new hash and the secrets that were generated or re-issued.`,
		Args: cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			doc, err := readExpanded(file, vars)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var resp any
			if update {
				s, err := session.Parse(doc)
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				resp, err = c.Update(ctx, s.Name, doc)
				if err != nil {
					return err
				}
			} else {
				resp, err = c.Create(ctx, doc)
				if err != nil {
					return err
				}
			}
			return printJSON(cmd, resp)
		}),
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVarP(&file, "file", "f", "", "session file")
	cmd.Flags().StringArrayVar(&vars, "var", nil, "template variable NAME=VALUE (repeatable)")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func readExpanded(file string, vars []string) ([]byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	v, err := parseVars(vars)
	if err != nil {
		return nil, err
	}
	doc, err := session.Expand(raw, v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return doc, nil
}

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newSessionGetCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Print a session document (if its read policy allows you)",
		Args:  cobra.ExactArgs(1),
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			resp, err := c.Get(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# session %s, hash %s\n%s", resp.Name, resp.Hash, resp.Session)
			return nil
		}),
	}
	cf.register(cmd.Flags())
	return cmd
}

func newSessionListCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the sessions you may read",
		Args:  cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.List(ctx)
			if err != nil {
				return err
			}
			for _, s := range list {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", s.Name, s.Hash, s.Updated.Format("2006-01-02T15:04:05Z07:00"))
			}
			return nil
		}),
	}
	cf.register(cmd.Flags())
	return cmd
}
