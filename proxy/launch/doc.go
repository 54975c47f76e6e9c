// Package launch starts an application the way SCONE's runtime does inside an enclave: only after
// attestation, and only with what the control plane rendered for the service.
//
// [Run] measures the binary (attest/measure: the simulated MRENCLAVE), attests through an
// [Attestor], and receives the service's [Config]: command arguments, environment, working
// directory, injection files and the protected file system (fspf) key and tag. The host's
// arguments and environment never reach the application (SCONE's rule), and the policy's command
// must name the binary that was measured, after PATH lookup and symlink resolution on both sides.
//
// # How the application is started
//
// Run re-executes the current binary (os.Executable) as a small stage-2 child marked by a hidden
// first argument; the program's main must call [MaybeStage2] before anything else. The child is
// created in a private mount namespace, receives the configuration over a pipe (never argv,
// environment or disk), makes every mount private (rprivate), and then:
//
//  1. decrypts the fspf tree into memory, when the session has one;
//  2. mounts a tmpfs (mode 0700, size-limited, nosuid, nodev, and noswap where the kernel allows
//     it) on each directory that holds injection files and on the fspf directory, creating missing
//     mount points (an empty directory is all the host ever sees; it is removed again after the
//     application exits);
//  3. writes the injection files (mode 0600) and the decrypted tree into those tmpfs mounts;
//  4. changes to the policy's working directory and execs the measured binary with the policy's
//     argv and environment, so the application's PID is the child's.
//
// Any failure before the exec refuses the start with its reason, and the application never runs.
// The parent forwards signals to the application and returns its exit status (128+N when it was
// killed by signal N).
//
// A tmpfs covers everything that was in its directory on the host, inside the namespace only:
// inject into dedicated directories (/tls, /run/secrets/app). Directories that an application
// cannot live without (/, /etc, /usr, ...) and directories holding the measured binary are refused
// as injection directories.
//
// # Isolation
//
// As root (CAP_SYS_ADMIN), the tmpfs mounts exist only in the application's mount namespace: no
// other process sees them in its mount table or at those paths, and nothing is written to a
// persistent file system; with noswap, not even to swap. Root on the host can still reach them
// through /proc/PID/root, as it can read the application's memory: protecting against the host's
// root is what SGX does in the real runtime, not what a namespace can do.
//
// Without CAP_SYS_ADMIN, the launcher falls back to an unprivileged user namespace with a mount
// namespace (the caller's uid and gid mapped to themselves). The files are still in memory and
// absent from every other process's view of the file system, but processes of the same uid can
// enter or trace the namespace, and the kernel does not allow noswap there, so tmpfs pages may
// reach swap when swap is enabled. When neither namespace can be created, the launcher refuses to
// start an application that has files to inject; there is no downgrade to files on disk. An
// application without injection files or fspf starts without a namespace in that case, since there
// is nothing to hide.
package launch
