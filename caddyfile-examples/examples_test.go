// Package examples checks every Caddyfile in this folder: each adapts to the
// JSON committed under testdata/ (run `go test ./caddyfile-examples -update`
// after a deliberate change and review the diff) and that JSON passes Caddy's
// own validation, which provisions every module as `caddy validate` does.
package examples

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-mqtt/caddy-mqtt"
)

var update = flag.Bool("update", false, "rewrite the golden JSON files")

func examples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	return files
}

func adapt(t *testing.T, file string) []byte {
	t.Helper()
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": file})
	if err != nil {
		t.Fatalf("adapting %s: %v", file, err)
	}
	for _, w := range warnings {
		// Formatting warnings would mean the example is not `caddy fmt` clean.
		t.Errorf("%s: warning: %s", file, w.String())
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "\t"); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	return pretty.Bytes()
}

func TestExamplesAdaptToGoldenJSON(t *testing.T) {
	for _, file := range examples(t) {
		t.Run(file, func(t *testing.T) {
			got := adapt(t, file)
			golden := filepath.Join("testdata", strings.TrimSuffix(file, ".Caddyfile")+".json")
			if file == "Caddyfile" {
				golden = filepath.Join("testdata", "Caddyfile.json")
			}
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s adapts differently from %s; run `go test ./caddyfile-examples -update` and review the diff.\ngot:\n%s", file, golden, got)
			}
		})
	}
}

func TestExamplesValidate(t *testing.T) {
	// Keep Caddy's storage out of the user's home.
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, file := range examples(t) {
		t.Run(file, func(t *testing.T) {
			var cfg caddy.Config
			if err := json.Unmarshal(adapt(t, file), &cfg); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&cfg); err != nil {
				t.Fatalf("%s does not validate: %v", file, err)
			}
		})
	}
}
