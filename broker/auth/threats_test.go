package auth

import (
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestBcryptCostOverCapRefusedAtLoad: a bcrypt line with an absurd cost
// ($2a$31$ would take days per check, every CONNECT for that user) is an
// error when the file is read, naming the file and line.
func TestBcryptCostOverCapRefusedAtLoad(t *testing.T) {
	ok, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cost  string
		valid bool
	}{{"14", true}, {"15", false}, {"31", false}} {
		hash := strings.Replace(string(ok), "$04$", "$"+c.cost+"$", 1)
		file := "alice:" + string(ok) + "\nmallory:" + hash + "\n"
		_, err := ParsePasswordFile(strings.NewReader(file), "/etc/mqtt/passwd")
		if c.valid {
			if err != nil {
				t.Errorf("cost %s: %v", c.cost, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "/etc/mqtt/passwd:2:") || !strings.Contains(err.Error(), "bcrypt cost "+c.cost) {
			t.Errorf("cost %s: error %v, want one naming /etc/mqtt/passwd:2 and the cost", c.cost, err)
		}
	}
}

// TestBcryptIgnoresBytesAfter72: what the comment in bcryptHash.verify
// says — x/crypto's comparison uses only the first 72 bytes of a password.
func TestBcryptIgnoresBytesAfter72(t *testing.T) {
	long := strings.Repeat("a", 72)
	h, err := bcrypt.GenerateFromPassword([]byte(long), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if !bcryptHash(h).verify(long + "anything") {
		t.Fatal("bcrypt no longer ignores bytes after the 72nd: fix the comment in bcryptHash.verify")
	}
}

// TestUnknownUserTimingMatchesKnown: a file whose first line is a fast
// legacy $6$ hash and whose other users have argon2id must not answer
// unknown users faster than known ones: the decoy is of the file's most
// common kind.
func TestUnknownUserTimingMatchesKnown(t *testing.T) {
	legacy, err := HashPasswordPBKDF2("x", 1, 12) // fast, like a $6$ line
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("old:" + legacy + "\n")
	for _, u := range []string{"alice", "bob", "carol"} {
		h, err := HashPasswordArgon2id(u + "-pw")
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + h + "\n")
	}
	p, err := ParsePasswordFile(strings.NewReader(b.String()), "passwd")
	if err != nil {
		t.Fatal(err)
	}
	median := func(user string) time.Duration {
		var d []time.Duration
		for range 7 {
			start := time.Now()
			p.Check(user, "wrong")
			d = append(d, time.Since(start))
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	known, unknown := median("alice"), median("nobody")
	t.Logf("known user %v, unknown user %v", known, unknown)
	if unknown < known/3 {
		t.Fatalf("unknown user answered in %v, known in %v: timing tells which users exist", unknown, known)
	}
}
