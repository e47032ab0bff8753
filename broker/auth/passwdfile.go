package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// PasswordFile is a password file held line by line for editing (the job
// of mosquitto_passwd): setting or deleting one user rewrites only that
// user's line, and comments, blank lines and other entries are written back
// byte for byte. Use ParsePasswordFile to load a file for authentication.
type PasswordFile struct {
	lines []pwLine
}

type pwLine struct {
	raw  string // without the trailing newline
	user string // "" for comments and blank lines
}

// ReadPasswordFile reads a password file for editing. Only the structure is
// checked (every entry must be "username:something"), not the hashes, so
// that a file with a broken entry can still be repaired by resetting or
// deleting that user. Errors have the form "name:line: problem".
func ReadPasswordFile(r io.Reader, name string) (*PasswordFile, error) {
	f := &PasswordFile{}
	err := scanLines(r, name, func(_ int, raw string) error {
		line := trimBlanks(raw)
		if line == "" || line[0] == '#' {
			f.lines = append(f.lines, pwLine{raw: raw})
			return nil
		}
		user, _, ok := strings.Cut(line, ":")
		if !ok {
			return errors.New(`missing ':' (want "username:hash")`)
		}
		user = trimBlanks(user)
		if user == "" {
			return errors.New("empty username")
		}
		f.lines = append(f.lines, pwLine{raw: raw, user: user})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Users returns the usernames in file order.
func (f *PasswordFile) Users() []string {
	var users []string
	for _, l := range f.lines {
		if l.user != "" {
			users = append(users, l.user)
		}
	}
	return users
}

// SetHash sets user's hash, replacing the user's line in place or
// appending a new one (added is true then). Any further lines for the same
// user are removed, which repairs duplicates.
func (f *PasswordFile) SetHash(user, encodedHash string) (added bool, err error) {
	if err := ValidUsername(user); err != nil {
		return false, err
	}
	if err := ValidateHash(encodedHash); err != nil {
		return false, err
	}
	entry := pwLine{raw: user + ":" + encodedHash, user: user}
	found := false
	kept := f.lines[:0]
	for _, l := range f.lines {
		if l.user == user {
			if found {
				continue
			}
			found = true
			l = entry
		}
		kept = append(kept, l)
	}
	f.lines = kept
	if !found {
		f.lines = append(f.lines, entry)
	}
	return !found, nil
}

// SetPassword hashes password with HashPassword and stores it for user.
func (f *PasswordFile) SetPassword(user, password string) (added bool, err error) {
	if err := ValidUsername(user); err != nil {
		return false, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return false, err
	}
	return f.SetHash(user, hash)
}

// Delete removes every line of user and reports whether there was one.
func (f *PasswordFile) Delete(user string) bool {
	found := false
	kept := f.lines[:0]
	for _, l := range f.lines {
		if l.user == user {
			found = true
			continue
		}
		kept = append(kept, l)
	}
	f.lines = kept
	return found
}

// WriteTo writes the file, each line ending in "\n" (a "\r" kept from a
// CRLF file stays on its line).
func (f *PasswordFile) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	var n int64
	for _, l := range f.lines {
		m, err := bw.WriteString(l.raw + "\n")
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, bw.Flush()
}

// EditPasswordFile reads the password file at path (a missing file counts
// as empty), lets edit change it and, if edit returns nil, replaces the file
// atomically with WritePasswordFile.
func EditPasswordFile(path string, edit func(*PasswordFile) error) error {
	f := &PasswordFile{}
	in, err := os.Open(path)
	switch {
	case err == nil:
		f, err = ReadPasswordFile(in, path)
		in.Close()
		if err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := edit(f); err != nil {
		return err
	}
	return WritePasswordFile(path, f)
}

// WritePasswordFile replaces the file at path with f atomically: it writes
// a temporary file in the same directory, syncs it and renames it over
// path, so a crash never leaves a truncated password file. An existing
// file's permission bits are kept; a new file gets 0600 because it holds
// password hashes. (File ownership is not carried over.)
func WritePasswordFile(path string, f *PasswordFile) (err error) {
	mode := fs.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = f.WriteTo(tmp); err != nil {
		return err
	}
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return nil
}
