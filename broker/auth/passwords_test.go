package auth

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const (
	alice7 = "$7$101$MDEyMzQ1Njc4OWFi$y5A0VhSHpIf15rNcI0/F6D9m8fnHmRCFQtNYyREYwOyiBEFpR0STXOSmLf7dPWpSC5ApPx/UNKjnNiUCIamdBw==" // hunter2
	bob6   = "$6$c2FsdHNhbHRzYWx0$jlrUV4Aelq8dBdHcGYRjc4KAn3GO6Wbz2wdvnpJXrWuFZ8iglkUBLJ3j38yh2UasbQNV6OTtSjSUd4eVUAbguQ=="     // old-school
	carolB = "$2y$04$oAuPeiPliLeznRapxtaYi.X8qHLGl5AKO4rnTG0mmZHOlZCGdvoze"                                                     // c pass
)

func TestParsePasswordFile(t *testing.T) {
	file := "# mosquitto password file\n" +
		"\n" +
		"alice:" + alice7 + "\n" +
		"   # indented comment\n" +
		"  bob  :  " + bob6 + "  \r\n" + // blanks and CRLF are tolerated
		"\t\n" +
		"carol:" + carolB // no final newline
	p, err := ParsePasswordFile(strings.NewReader(file), "pw")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Users(), ","); got != "alice,bob,carol" {
		t.Errorf("Users() = %s", got)
	}
	if p.Len() != 3 || !p.Has("bob") || p.Has("dave") {
		t.Errorf("Len/Has wrong: %d %v %v", p.Len(), p.Has("bob"), p.Has("dave"))
	}
	for _, c := range []struct {
		user, pw string
		want     bool
	}{
		{"alice", "hunter2", true},
		{"alice", "hunter3", false},
		{"alice", "", false},
		{"bob", "old-school", true},
		{"bob", "hunter2", false},
		{"carol", "c pass", true},
		{"carol", "c  pass", false},
		{"dave", "hunter2", false}, // unknown user, even with someone's password
		{"", "", false},
		{"Alice", "hunter2", false}, // usernames are case-sensitive
	} {
		if got := p.Check(c.user, c.pw); got != c.want {
			t.Errorf("Check(%q, %q) = %v, want %v", c.user, c.pw, got, c.want)
		}
	}
}

func TestParsePasswordFileErrors(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"alice:" + alice7 + "\nbob\n", `pw.txt:2: missing ':'`},
		{":" + alice7, `pw.txt:1: empty username`},
		{"alice:", `pw.txt:1: user "alice": empty password hash`},
		{"alice:   \n", `pw.txt:1: user "alice": empty password hash`},
		{"alice:secret", `pw.txt:1: user "alice": password is not hashed`},
		{"\n\nalice:$5$x$y", `pw.txt:3: user "alice": unknown hash type "$5$"`},
		{"alice:$7$101$!!$" + strings.Repeat("A", 88), `pw.txt:1: user "alice": bad base64 in salt`},
		{"alice:" + alice7 + "\n# c\nalice:" + bob6, `pw.txt:3: duplicate user "alice" (first defined on line 1)`},
		{"al\x01ice:" + alice7, `pw.txt:1: username "al\x01ice" must not contain control characters`},
		{"alice:" + alice7 + ":extra", `pw.txt:1: unexpected second ':'`},
		{"alice:" + strings.Repeat("x", maxLineLen+1), `pw.txt:1: line longer than`},
	} {
		_, err := ParsePasswordFile(strings.NewReader(c.file), "pw.txt")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParsePasswordFile(%.40q) error = %v, want %q", c.file, err, c.want)
		}
	}
}

func TestPasswordsAdd(t *testing.T) {
	p := NewPasswords()
	if p.Check("alice", "hunter2") {
		t.Error("empty set accepted a user")
	}
	if err := p.Add("alice", alice7); err != nil {
		t.Fatal(err)
	}
	if !p.Check("alice", "hunter2") {
		t.Error("added user refused")
	}
	for _, c := range []struct{ user, hash, want string }{
		{"alice", bob6, `duplicate user "alice"`},
		{"", bob6, "empty username"},
		{"a:b", bob6, "must not contain ':'"},
		{" bob", bob6, "must not start or end with blanks"},
		{"bob", "nope", "not hashed"},
	} {
		if err := p.Add(c.user, c.hash); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Add(%q) = %v, want %q", c.user, err, c.want)
		}
	}
	var nilP *Passwords
	if nilP.Check("alice", "hunter2") || nilP.Has("alice") || nilP.Len() != 0 || nilP.Users() != nil {
		t.Error("nil *Passwords must refuse everyone")
	}
}

// TestPasswordsConcurrent runs under -race to check the locking.
func TestPasswordsConcurrent(t *testing.T) {
	p := NewPasswords()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := p.Add(fmt.Sprintf("u%d", i), bob6); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			p.Check(fmt.Sprintf("u%d", i), "old-school")
			p.Users()
		}()
	}
	wg.Wait()
	if !p.Check("u3", "old-school") {
		t.Error("u3 refused")
	}
}

func TestPasswordFileEdit(t *testing.T) {
	orig := "# header comment\n" +
		"alice:" + alice7 + "\n" +
		"\n" +
		"  # note about bob\n" +
		"bob : " + bob6 + "\r\n" +
		"bob:" + carolB + "\n" + // duplicate: SetHash repairs it
		"carol:$broken\n" // editing must work on files with bad hashes
	f, err := ReadPasswordFile(strings.NewReader(orig), "pw")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Users(), ","); got != "alice,bob,bob,carol" {
		t.Errorf("Users() = %s", got)
	}
	added, err := f.SetHash("bob", alice7)
	if err != nil || added {
		t.Fatalf("SetHash(bob) = %v, %v; want replaced", added, err)
	}
	if !f.Delete("carol") || f.Delete("nobody") {
		t.Error("Delete results wrong")
	}
	added, err = f.SetPassword("dave", "dave's pw")
	if err != nil || !added {
		t.Fatalf("SetPassword(dave) = %v, %v; want added", added, err)
	}
	if _, err := f.SetHash("eve", "plain"); err == nil {
		t.Error("SetHash accepted a plain-text password")
	}
	if _, err := f.SetPassword("e:ve", "x"); err == nil {
		t.Error("SetPassword accepted a username with ':'")
	}
	var buf bytes.Buffer
	if _, err := f.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(buf.String(), "\n")
	want := []string{"# header comment", "alice:" + alice7, "", "  # note about bob", "bob:" + alice7}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i+1, lines[i], w)
		}
	}
	if len(lines) != 7 || !strings.HasPrefix(lines[5], "dave:$7$1000$") || lines[6] != "" {
		t.Errorf("unexpected tail: %q", lines[5:])
	}
	p, err := ParsePasswordFile(&buf, "edited")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Check("bob", "hunter2") || !p.Check("dave", "dave's pw") || p.Has("carol") {
		t.Error("edited file does not authenticate as expected")
	}

	if _, err := ReadPasswordFile(strings.NewReader("ok:x\nbroken\n"), "pw"); err == nil || !strings.Contains(err.Error(), "pw:2: missing ':'") {
		t.Errorf("ReadPasswordFile error = %v", err)
	}
}

func TestEditPasswordFileOnDisk(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	// A missing file is created with mode 0600.
	err := EditPasswordFile(path, func(f *PasswordFile) error {
		_, err := f.SetPassword("alice", "pw1")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("new file mode = %v, %v; want 0600", st.Mode(), err)
	}
	// An existing file keeps its mode and its comments.
	if err := os.WriteFile(path, []byte("# keep me\n"+mustRead(t, path)), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	err = EditPasswordFile(path, func(f *PasswordFile) error {
		_, err := f.SetPassword("bob", "pw2")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode after edit = %v, want 0640", st.Mode())
	}
	content := mustRead(t, path)
	if !strings.HasPrefix(content, "# keep me\nalice:$7$") {
		t.Errorf("content = %q", content)
	}
	p, err := ParsePasswordFile(strings.NewReader(content), path)
	if err != nil || !p.Check("alice", "pw1") || !p.Check("bob", "pw2") {
		t.Errorf("edited file: %v", err)
	}
	// A failing edit leaves the file alone and no temporary files behind.
	err = EditPasswordFile(path, func(f *PasswordFile) error {
		f.Delete("alice")
		return fmt.Errorf("abort")
	})
	if err == nil || mustRead(t, path) != content {
		t.Error("failed edit changed the file")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory has %d entries, want only the password file", len(entries))
	}
	// A broken file is reported with its line.
	os.WriteFile(path, []byte("fine:x\nbroken\n"), 0o600)
	if err := EditPasswordFile(path, func(*PasswordFile) error { return nil }); err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Errorf("EditPasswordFile on broken file: %v", err)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
