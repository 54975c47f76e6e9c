package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/attest/attestapi"
)

// installConfig is what `attestmesh install` does.
type installConfig struct {
	Dest   string
	CAEnv  string
	CAFile string
}

func newInstallCmd() *cobra.Command {
	var cfg installConfig
	cmd := &cobra.Command{
		Use:   "install DEST",
		Short: "Copy this executable to DEST (and the pinned CA to --ca-file): the injector's init container",
		Long: `install copies the running attestmesh executable to DEST, mode 0755. The sidecar
injector's init container runs it to hand the static binary to the app container through an
in-memory volume, where it becomes the launcher (attestmesh launch).

With --ca-env NAME --ca-file PATH it also writes the control plane's CA certificate, taken from
the environment variable NAME (PEM; the injector puts it there), to PATH.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Dest = args[0]
			return runInstall(cfg, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.CAEnv, "ca-env", "", "environment variable that holds the CA certificate (PEM)")
	f.StringVar(&cfg.CAFile, "ca-file", "", "where to write the CA certificate")
	return cmd
}

func runInstall(cfg installConfig, out io.Writer) error {
	if (cfg.CAEnv == "") != (cfg.CAFile == "") {
		return errors.New("install: --ca-env and --ca-file go together")
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := copyFile(self, cfg.Dest, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(out, "installed %s\n", cfg.Dest)
	if cfg.CAEnv == "" {
		return nil
	}
	pem := os.Getenv(cfg.CAEnv)
	certs, err := attestapi.ParseCertsPEM([]byte(pem))
	if err != nil {
		return fmt.Errorf("install: $%s does not hold a PEM certificate: %w", cfg.CAEnv, err)
	}
	if len(certs) == 0 {
		return fmt.Errorf("install: $%s does not hold a PEM certificate", cfg.CAEnv)
	}
	if err := writeFileAtomic(cfg.CAFile, []byte(pem), 0o644); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	fmt.Fprintf(out, "installed %s (%s)\n", cfg.CAFile, certs[0].Subject.CommonName)
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer in.Close()
	data, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("install: read %s: %w", src, err)
	}
	if err := writeFileAtomic(dst, data, mode); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it into place.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}
