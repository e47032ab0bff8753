package caddymqtt

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"github.com/caddyserver/certmagic"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/caddy-mqtt/caddy-mqtt/broker/auth"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "mqtt",
		Usage: "passwd|cert|clients|kick|pub ...",
		Short: "Manages MQTT users and device certificates",
		Long: `
Tools for the mqtt app:

  caddy mqtt passwd [-c | -D] [-b] <file> <username> [<password>]
      adds, changes (-c: in a new file) or deletes (-D) a user of a
      mosquitto password file, like mosquitto_passwd.

  caddy mqtt cert --cn <name> [--out <dir>] [--days <n>] [--ca <id>]
      issues a P-256 device certificate signed by a pki app CA
      (default "mqtt-devices", which must be configured in the pki app).

  caddy mqtt clients [--address <admin>] [--json]
      lists the sessions of a running Caddy (admin API).

  caddy mqtt kick [--address <admin>] [--discard] <client id>
      disconnects a client (MQTT 5: reason 0x98); --discard also drops
      its persistent session.

  caddy mqtt pub [--address <admin>] [-q <qos>] [-r] [--base64] <topic> <payload>
      publishes a message through the broker.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(passwdCommand(), certCommand(), clientsCommand(), kickCommand(), pubCommand()) // admincmd.go
		},
	})
}

// passwdIterations and passwdSaltLen make "$7$1000$<12-byte salt>$..."
// hashes: mosquitto 2.0 reads the iteration count from the hash but accepts
// only 12-byte salts, while 2.1 accepts 12- or 64-byte salts, so this is
// the strongest $7$ hash that both versions (and this broker) read. 1000 is
// mosquitto 2.1's iteration count; 2.0 writes 101.
const (
	passwdIterations = auth.DefaultPBKDF2Iterations
	passwdSaltLen    = 12
)

func passwdCommand() *cobra.Command {
	var create, batch, del bool
	c := &cobra.Command{
		Use:   "passwd [-c | -D] [-b] <file> <username> [<password>]",
		Short: "Adds, changes or deletes a user of a mosquitto password file",
		Long: `Edits a mosquitto password file as mosquitto_passwd does. Without -b the
password is read twice from the terminal (or once from standard input when
it is not a terminal). Hashes are PBKDF2-SHA512 ($7$, 1000 iterations, 12-byte
salt), which mosquitto 2.0 and 2.1 both accept. The file is replaced
atomically and keeps its permissions (new files: 0600). Run
'caddy reload --force' afterwards: Caddy re-reads password files on reload.`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			file, user := args[0], args[1]
			switch {
			case create && del:
				return errors.New("-c and -D exclude each other")
			case del && len(args) != 2:
				return errors.New("-D takes <file> <username>")
			case batch && len(args) != 3:
				return errors.New("-b needs the password as third argument")
			case !batch && len(args) == 3:
				return errors.New("a password on the command line needs -b")
			}
			if !create {
				// Like mosquitto_passwd: only -c creates a file, so a
				// mistyped path is an error rather than a new file that
				// Caddy never reads.
				if _, err := os.Stat(file); err != nil {
					if errors.Is(err, fs.ErrNotExist) {
						return fmt.Errorf("%s does not exist; use -c to create it", file)
					}
					return err
				}
			}
			if del {
				return auth.EditPasswordFile(file, func(f *auth.PasswordFile) error {
					if !f.Delete(user) {
						return fmt.Errorf("user %q not found in %s", user, file)
					}
					return nil
				})
			}
			if err := auth.ValidUsername(user); err != nil {
				return err
			}
			password := ""
			if batch {
				password = args[2]
			} else {
				var err error
				if password, err = readPassword(cmd); err != nil {
					return err
				}
			}
			hash, err := auth.HashPasswordPBKDF2(password, passwdIterations, passwdSaltLen)
			if err != nil {
				return err
			}
			if create {
				f := &auth.PasswordFile{}
				if _, err := f.SetHash(user, hash); err != nil {
					return err
				}
				// -c starts afresh, like mosquitto_passwd -c, but a new
				// file must not inherit loose permissions.
				if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				return auth.WritePasswordFile(file, f)
			}
			return auth.EditPasswordFile(file, func(f *auth.PasswordFile) error {
				_, err := f.SetHash(user, hash)
				return err
			})
		},
	}
	c.Flags().BoolVarP(&create, "create", "c", false, "create a new file (replacing an existing one)")
	c.Flags().BoolVarP(&batch, "batch", "b", false, "take the password from the command line")
	c.Flags().BoolVarP(&del, "delete", "D", false, "delete the user")
	return c
}

func readPassword(cmd *cobra.Command) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("reading password from standard input: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	fmt.Fprint(os.Stderr, "Password: ")
	p1, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(os.Stderr, "Reenter password: ")
	p2, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", err
	}
	if string(p1) != string(p2) {
		return "", errors.New("passwords do not match")
	}
	return string(p1), nil
}

// DeviceCAID is the pki app CA `caddy mqtt cert` signs with by default: one
// for devices only, so that a door trusting it does not also accept the
// server certificates Caddy's "local" CA issues.
const DeviceCAID = "mqtt-devices"

func certCommand() *cobra.Command {
	var cn, out, caID string
	var days int
	var force bool
	c := &cobra.Command{
		Use:   "cert --cn <name> [--out <dir>] [--days <n>] [--ca <id>]",
		Short: "Issues a client certificate signed by a CA of Caddy's pki app",
		Long: `Issues a P-256 client certificate with the subject CN=<name>, signed by
the root of a CA of Caddy's pki app (default "` + DeviceCAID + `", a CA for
devices only), read from Caddy's default storage in its data directory.
Writes client_cert.pem, client_key.pem (0600) and ca.pem (the CA's root) to
--out, and server_ca.pem (the root of Caddy's "local" CA, which signs its
internal server certificates) when that exists.

The CA must be configured in the pki app and Caddy must have run once with
it, which creates it; in the Caddyfile's global options:

	pki {
		ca ` + DeviceCAID + ` {
			name "MQTT devices"
		}
	}

The broker takes <name> as the username with use_identity_as_username when
its TLS door verifies client certificates against that CA:

	client_auth {
		mode require_and_verify
		trust_pool pki_root ` + DeviceCAID + `   # or: trust_pool file ca.pem
	}

Do not use the "local" CA for devices: it also signs Caddy's internal server
certificates, and a door trusting it accepts each of those as a client
certificate, under its host name as username.

The certificate is signed by the root, not by the CA's intermediate, because
the intermediate is replaced every few days and a device certificate has to
outlive it.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if cn == "" {
				return errors.New("--cn is required")
			}
			if days < 1 {
				return errors.New("--days must be at least 1")
			}
			return issueClientCert(caID, cn, out, days, force)
		},
	}
	c.Flags().StringVar(&cn, "cn", "", "the certificate's common name, which becomes the MQTT username")
	c.Flags().StringVar(&out, "out", ".", "directory to write the files to")
	c.Flags().IntVar(&days, "days", 365, "validity in days")
	c.Flags().StringVar(&caID, "ca", DeviceCAID, "ID of the pki app's CA")
	c.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return c
}

func issueClientCert(caID, cn, outDir string, days int, force bool) error {
	if err := auth.ValidUsername(cn); err != nil {
		return fmt.Errorf("--cn: %w", err)
	}
	storage := caddy.DefaultStorage
	ctx := context.Background()
	prefix := path.Join("pki", "authorities", certmagic.StorageKeys.Safe(caID))
	rootPEM, err := storage.Load(ctx, path.Join(prefix, "root.crt"))
	if err != nil {
		return fmt.Errorf("loading CA %q from %s: %w (configure it in the global options, pki { ca %s }, and run Caddy once)",
			caID, storage.Path, err, caID)
	}
	keyPEM, err := storage.Load(ctx, path.Join(prefix, "root.key"))
	if err != nil {
		return fmt.Errorf("loading the key of CA %q: %w", caID, err)
	}
	blk, _ := pem.Decode(rootPEM)
	if blk == nil {
		return fmt.Errorf("CA %q: root.crt is not PEM", caID)
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fmt.Errorf("CA %q: %w", caID, err)
	}
	rootKey, err := certmagic.PEMDecodePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("CA %q: %w", caID, err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return err
	}
	now := time.Now()
	notAfter := now.Add(time.Duration(days) * 24 * time.Hour)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter // a certificate cannot outlive its CA
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-5 * time.Minute), // tolerate device clock skew
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, root, &key.PublicKey, rootKey)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	// SEC1 "EC PRIVATE KEY": read by OpenSSL/mosquitto, mbedTLS and BearSSL.
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	type outFile struct {
		name string
		data []byte
		mode fs.FileMode
	}
	files := []outFile{
		{"client_key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
		{"client_cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{"ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), 0o644},
	}
	if caID != caddypki.DefaultCAID {
		// What clients verify the server's internal certificates with.
		if local, err := storage.Load(ctx, path.Join("pki", "authorities", caddypki.DefaultCAID, "root.crt")); err == nil {
			files = append(files, outFile{"server_ca.pem", local, 0o644})
		}
	}
	if !force {
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(outDir, f.name)); err == nil {
				return fmt.Errorf("%s exists (use --force to overwrite)", filepath.Join(outDir, f.name))
			}
		}
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(outDir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	fmt.Printf("Issued CN=%s, valid until %s, signed by %q.\nWrote %s\n", cn, notAfter.Format(time.RFC3339), root.Subject.CommonName,
		strings.Join([]string{filepath.Join(outDir, "client_cert.pem"), filepath.Join(outDir, "client_key.pem"), filepath.Join(outDir, "ca.pem")}, ", "))
	return nil
}

// writeFileAtomic writes data to a new file that is private (0600) from its
// creation, gives it mode and renames it over path. Writing into an existing
// file would put the new private key into that file's inode, readable by
// anyone who opened it while it was readable (or through a hard link) before
// any chmod.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
