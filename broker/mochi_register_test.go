package broker

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMochiRegisterNamesRealTests keeps MOCHI.md honest: every test a row
// names exists in this repository, and every row names a canary or says,
// in brackets after "none yet", why it has none.
func TestMochiRegisterNamesRealTests(t *testing.T) {
	register, err := os.ReadFile("MOCHI.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	funcTest := regexp.MustCompile(`(?m)^func (Test\w+)\(`)
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == ".git" || d.Name() == "firmware") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range funcTest.FindAllStringSubmatch(string(src), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	named := regexp.MustCompile("`(Test\\w+)`")
	rows := 0
	for _, line := range strings.Split(string(register), "\n") {
		for _, m := range named.FindAllStringSubmatch(line, -1) {
			if !defined[m[1]] {
				t.Errorf("MOCHI.md names %s, which no test file defines", m[1])
			}
		}
		cells := strings.Split(line, "|")
		if len(cells) != 7 || strings.TrimSpace(cells[1]) == "#" || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		rows++
		canary := strings.TrimSpace(cells[5])
		if !strings.Contains(canary, "Canary") && !strings.HasPrefix(canary, "none yet (") {
			t.Errorf("MOCHI.md row %s has no canary and says not why: %q", strings.TrimSpace(cells[1]), canary)
		}
	}
	if rows < 30 {
		t.Fatalf("read %d rows of MOCHI.md's table; has its layout changed?", rows)
	}
}
