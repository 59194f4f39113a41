// Package images checks what the Dockerfile relies on: both binaries build
// with CGO_ENABLED=0 into static executables with the version stamped in.
package images

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestStaticBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries")
	}
	dir := t.TempDir()
	for _, cmd := range []string{"manager", "engine"} {
		t.Run(cmd, func(t *testing.T) {
			out := filepath.Join(dir, cmd)
			build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X github.com/attune-io/attune/internal/version.Version=v9.9.9-test", "-o", out, "github.com/attune-io/attune/cmd/"+cmd)
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, b)
			}
			f, err := elf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = f.Close() }()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Fatal("the binary needs a dynamic loader: not static")
				}
			}
			if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
				t.Fatalf("the binary links %v", libs)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), "v9.9.9-test") {
				t.Error("the version is not stamped into the binary")
			}
		})
	}
}
