package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// KeyWrapper wraps users' data keys under the world's key-encryption key
// (KEK). Keyring is the local implementation, with the KEKs read from a
// mounted Secret; a KMS plugin (docs/data-protection.md) implements the
// same three methods by calling the KMS, so that the KEK never leaves it.
type KeyWrapper interface {
	// Primary names the KEK that Wrap uses now. Data keys wrapped by any
	// other are re-wrapped by Sealed.Rewrap.
	Primary() string
	// Wrap seals dek under the primary KEK, bound to aad, and names the
	// KEK it used.
	Wrap(ctx context.Context, dek, aad []byte) (kek string, wrapped []byte, err error)
	// Unwrap opens a data key that Wrap sealed under the named KEK.
	Unwrap(ctx context.Context, kek string, wrapped, aad []byte) ([]byte, error)
}

// KEKSize is the size of a key-encryption key: AES-256.
const KEKSize = 32

// KeyringPrimaryFile names, in a keyring directory, the file that holds
// the primary KEK's ID; every other file is one KEK named by its file name.
const KeyringPrimaryFile = "primary"

var kekIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Keyring holds the world's KEKs: the primary one wraps new data keys,
// and every one unwraps, so that during a rotation data keys under the old
// and the new KEK are both readable. It is immutable; a rotation loads a
// new Keyring (LoadKeyring) and hands it to Sealed.SetKeys.
type Keyring struct {
	primary string
	keys    map[string]cipher.AEAD
}

var _ KeyWrapper = (*Keyring)(nil)

// NewKeyring builds a keyring from KEKs by ID (each KEKSize bytes); primary
// must be one of them.
func NewKeyring(primary string, keys map[string][]byte) (*Keyring, error) {
	k := &Keyring{primary: primary, keys: make(map[string]cipher.AEAD, len(keys))}
	for id, key := range keys {
		if !kekIDPattern.MatchString(id) || id == KeyringPrimaryFile {
			return nil, fmt.Errorf("key-encryption key %q: an ID is 1–63 letters, digits, '.', '_' or '-', and not %q", id, KeyringPrimaryFile)
		}
		if len(key) != KEKSize {
			return nil, fmt.Errorf("key-encryption key %q: want %d bytes, got %d", id, KEKSize, len(key))
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("key-encryption key %q: %w", id, err)
		}
		if k.keys[id], err = cipher.NewGCMWithRandomNonce(block); err != nil {
			return nil, fmt.Errorf("key-encryption key %q: %w", id, err)
		}
	}
	if _, ok := k.keys[primary]; !ok {
		return nil, fmt.Errorf("the primary key-encryption key %q is not in the keyring (it holds %v)", primary, k.IDs())
	}
	return k, nil
}

// LoadKeyring reads a keyring directory, as a Secret is mounted: one file
// per KEK, named by its ID, holding KEKSize raw bytes or their standard
// base64; and the file "primary" naming the primary KEK, which may be
// left out when there is only one. Names starting with "." (the kubelet's
// bookkeeping) are skipped.
func LoadKeyring(dir string) (*Keyring, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read keyring: %w", err)
	}
	keys := map[string][]byte{}
	primary := ""
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed while we read
			}
			return nil, fmt.Errorf("read keyring: %w", err)
		}
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || info.IsDir() {
			continue
		}
		if name == KeyringPrimaryFile {
			primary = strings.TrimSpace(string(b))
			continue
		}
		key := b
		if len(b) != KEKSize {
			decoded, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
			if err != nil {
				return nil, fmt.Errorf("key-encryption key %q in %s: want %d raw bytes or their base64, got %d bytes", name, dir, KEKSize, len(b))
			}
			key = decoded
		}
		keys[name] = key
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("keyring %s holds no key-encryption key", dir)
	}
	if primary == "" {
		if len(keys) > 1 {
			return nil, fmt.Errorf("keyring %s holds %d key-encryption keys and no file %q naming the one to wrap with", dir, len(keys), KeyringPrimaryFile)
		}
		for id := range keys {
			primary = id
		}
	}
	k, err := NewKeyring(primary, keys)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", dir, err)
	}
	return k, nil
}

// Primary implements KeyWrapper.
func (k *Keyring) Primary() string { return k.primary }

// IDs lists the keyring's KEKs.
func (k *Keyring) IDs() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Wrap implements KeyWrapper with AES-256-GCM (random nonce) under the
// primary KEK.
func (k *Keyring) Wrap(_ context.Context, dek, aad []byte) (string, []byte, error) {
	return k.primary, k.keys[k.primary].Seal(nil, nil, dek, aad), nil
}

// Unwrap implements KeyWrapper.
func (k *Keyring) Unwrap(_ context.Context, kek string, wrapped, aad []byte) ([]byte, error) {
	aead, ok := k.keys[kek]
	if !ok {
		return nil, fmt.Errorf("%w: a data key is wrapped by key-encryption key %q, which the keyring (%v) lacks", ErrKeyUnavailable, kek, k.IDs())
	}
	dek, err := aead.Open(nil, nil, wrapped, aad)
	if err != nil {
		return nil, fmt.Errorf("unwrap a data key with key-encryption key %q: %w", kek, err)
	}
	return dek, nil
}

// ErrKeyUnavailable: a data key's KEK is not in the keyring (retired too
// early, or the wrong Secret mounted).
var ErrKeyUnavailable = errors.New("key-encryption key unavailable")
