package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

// TokenSource supplies the bearer token of each request. Token is called
// once per attempt, so a source that changes (a rotated Secret) is followed
// from the next request on.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a token that never changes.
func StaticToken(token string) TokenSource { return staticToken(token) }

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

// FileToken reads the token from a file, such as a mounted Kubernetes
// Secret key (/var/run/secrets/.../token), and reads it again whenever the
// file changes (another file, size or modification time: the kubelet
// swaps a symlink, other writers rename or rewrite), so a rotated Secret is
// picked up without a restart. Surrounding whitespace is trimmed; an empty
// or unreadable file is an error of the request, which is not sent.
func FileToken(path string) *FileTokenSource { return &FileTokenSource{path: path} }

// FileTokenSource is the TokenSource of FileToken.
type FileTokenSource struct {
	path string

	mu    sync.Mutex
	info  os.FileInfo // of the file last read
	token string
}

// Token returns the file's token, re-reading the file if it changed since
// the last read.
func (f *FileTokenSource) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, err := os.Stat(f.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if f.info != nil && unchanged(f.info, info) {
		return f.token, nil
	}
	raw, err := os.ReadFile(f.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	token := strings.TrimSpace(string(raw))
	if token == "" {
		return "", fmt.Errorf("token file %s: %w", f.path, errEmptyToken)
	}
	f.info, f.token = info, token
	return token, nil
}

var errEmptyToken = errors.New("the file is empty")

func unchanged(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
