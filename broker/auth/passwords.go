package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"unicode"
)

// maxLineLen bounds one line of a password or ACL file. mosquitto grows its
// buffer without limit; 1 MiB is far above any real entry (a hash is ~200
// bytes, a topic at most 64 KiB) and keeps a broken file from eating memory.
const maxLineLen = 1 << 20

// Passwords is a set of users with hashed passwords, as read from a
// mosquitto password file or added one by one. It is safe for concurrent
// use.
type Passwords struct {
	mu    sync.RWMutex
	users map[string]verifier
	line  map[string]int // where each user came from, for duplicate errors
	// encoded is each user's hash as written, which identifies the entry
	// that let a client in (Fingerprint).
	encoded map[string]string
	// decoy is checked for unknown users so that they take about as long
	// as known ones and response times do not reveal which users exist:
	// the first hash of the file's most common kind and cost (kinds), so
	// that a few fast legacy lines do not make unknown users fast.
	decoy     verifier
	decoyKind string
	kinds     map[string]int
	sample    map[string]verifier
}

// NewPasswords returns an empty set; Check refuses everyone until users
// are added.
func NewPasswords() *Passwords {
	return &Passwords{users: map[string]verifier{}, line: map[string]int{}, encoded: map[string]string{},
		kinds: map[string]int{}, sample: map[string]verifier{}}
}

// ParsePasswordFile reads a mosquitto-style password file: one
// "username:hash" per line, blanks around both parts ignored, lines starting
// with '#' and blank lines skipped. name is used in error messages, which
// have the form "name:line: problem".
//
// Unlike mosquitto, which logs and skips bad lines (and lets a user with an
// empty hash in with any password), every problem is an error: a broker
// should not start with half its users silently missing.
func ParsePasswordFile(r io.Reader, name string) (*Passwords, error) {
	p := NewPasswords()
	err := scanLines(r, name, func(lineNo int, line string) error {
		line = trimBlanks(line)
		if line == "" || line[0] == '#' {
			return nil
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok {
			return errors.New(`missing ':' (want "username:hash")`)
		}
		if strings.Contains(hash, ":") {
			// mosquitto would silently drop everything after it.
			return errors.New(`unexpected second ':' (want "username:hash")`)
		}
		return p.add(trimBlanks(user), trimBlanks(hash), lineNo)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Add adds a user with an already hashed password (any format ValidateHash
// accepts), e.g. from inline configuration. It fails for an invalid
// username, an unsupported hash or a user that already exists.
func (p *Passwords) Add(user, encodedHash string) error {
	return p.add(user, encodedHash, 0)
}

func (p *Passwords) add(user, encodedHash string, lineNo int) error {
	if err := ValidUsername(user); err != nil {
		return err
	}
	v, err := parseHash(encodedHash)
	if err != nil {
		return fmt.Errorf("user %q: %w", user, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.users[user]; dup {
		if prev := p.line[user]; prev > 0 {
			return fmt.Errorf("duplicate user %q (first defined on line %d)", user, prev)
		}
		return fmt.Errorf("duplicate user %q", user)
	}
	p.users[user] = v
	p.line[user] = lineNo
	p.encoded[user] = encodedHash
	kind := hashKind(encodedHash)
	p.kinds[kind]++
	if p.sample[kind] == nil {
		p.sample[kind] = v
	}
	if p.decoy == nil || p.kinds[kind] > p.kinds[p.decoyKind] {
		p.decoy, p.decoyKind = p.sample[kind], kind
	}
	return nil
}

// hashKind is an encoded hash's algorithm and cost parameters, without salt
// and hash: lines of one kind take the same time to check.
func hashKind(encoded string) string {
	switch {
	case strings.HasPrefix(encoded, "$argon2id$"):
		// $argon2id$v=19$m=...,t=...,p=...$salt$hash
		parts := strings.Split(encoded, "$")
		if len(parts) > 3 {
			return strings.Join(parts[:4], "$")
		}
	case strings.HasPrefix(encoded, "$7$"):
		// $7$iterations$salt$hash
		parts := strings.Split(encoded, "$")
		if len(parts) > 2 {
			return strings.Join(parts[:3], "$")
		}
	case strings.HasPrefix(encoded, "$2"):
		// $2b$cost$...
		if len(encoded) >= 7 {
			return encoded[:7]
		}
	case strings.HasPrefix(encoded, "$6$"):
		return "$6$"
	}
	return encoded
}

// Fingerprint returns user's hash as it was read (never a password), or ""
// for an unknown user. Two password sets give the same fingerprint for a
// user exactly when the user's entry did not change.
func (p *Passwords) Fingerprint(user string) string {
	if p == nil {
		return ""
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.encoded[user]
}

// ValidUsername reports why user cannot be stored in a password file: it
// must be non-empty, contain no ':' or control characters (mosquitto_passwd's
// rules) and have no leading or trailing blanks, which the file format
// strips.
func ValidUsername(user string) error {
	switch {
	case user == "":
		return errors.New("empty username")
	case strings.ContainsRune(user, ':'):
		return fmt.Errorf("username %q must not contain ':'", user)
	case strings.IndexFunc(user, unicode.IsControl) >= 0:
		return fmt.Errorf("username %q must not contain control characters", user)
	case trimBlanks(user) != user:
		return fmt.Errorf("username %q must not start or end with blanks", user)
	}
	return nil
}

// fallbackDecoy is used when no user exists, so that even an empty set
// costs a typical PBKDF2 computation per check.
var fallbackDecoy = &pbkdf2Hash{iterations: DefaultPBKDF2Iterations, salt: make([]byte, DefaultSaltLen), hash: make([]byte, sha512Size)}

// Check reports whether password is right for user. Unknown users are
// refused after a hash computation of the same kind as for a known user
// (the file's most common kind and cost), so timing does not tell which
// users exist.
func (p *Passwords) Check(user, password string) bool {
	if p == nil {
		return false
	}
	p.mu.RLock()
	v, ok := p.users[user]
	decoy := p.decoy
	p.mu.RUnlock()
	if !ok {
		if decoy == nil {
			decoy = fallbackDecoy
		}
		decoy.verify(password) // result ignored: the user does not exist
		return false
	}
	return v.verify(password)
}

// Has reports whether user exists.
func (p *Passwords) Has(user string) bool {
	if p == nil {
		return false
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.users[user]
	return ok
}

// Users returns the usernames in sorted order.
func (p *Passwords) Users() []string {
	if p == nil {
		return nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	users := make([]string, 0, len(p.users))
	for u := range p.users {
		users = append(users, u)
	}
	sort.Strings(users)
	return users
}

// Len returns the number of users.
func (p *Passwords) Len() int {
	if p == nil {
		return 0
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.users)
}

// scanLines calls fn for every line of r without its line ending ("\n" or
// "\r\n"), numbering lines from 1, and prefixes errors with "name:line: ".
func scanLines(r io.Reader, name string, fn func(lineNo int, line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLineLen)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		if err := fn(lineNo, strings.TrimSuffix(sc.Text(), "\r")); err != nil {
			return fmt.Errorf("%s:%d: %w", name, lineNo, err)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s:%d: line longer than %d bytes", name, lineNo+1, maxLineLen)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// trimBlanks strips spaces and tabs, like mosquitto's misc__trimblanks.
func trimBlanks(s string) string {
	return strings.Trim(s, " \t")
}
