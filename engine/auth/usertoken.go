package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// User token lifetimes.
const (
	DefaultUserTokenTTL = 15 * time.Minute
	MaxUserTokenTTL     = time.Hour
	// MinUserTokenKeyBytes is the least key length HS256 is given
	// (RFC 7518 §3.2: a key at least as long as the hash).
	MinUserTokenKeyBytes = 32
)

// UserTokenIssuer is the iss of every user token.
const UserTokenIssuer = "attune-engine"

// userTokenAlg is the only algorithm minted and accepted: pinned, so a
// token cannot pick "none" or another key type.
var userTokenAlg = jwt.SigningMethodHS256

// UserTokens mints and verifies the user tokens of one program: HS256
// under the program's signing key, aud the program.
type UserTokens struct {
	key     []byte
	program string
	now     func() time.Time
}

// NewUserTokens builds the minter and verifier for program under key.
func NewUserTokens(key []byte, program string) (*UserTokens, error) {
	if len(key) < MinUserTokenKeyBytes {
		return nil, fmt.Errorf("userTokenKeyFile: the signing key must be at least %d bytes, got %d", MinUserTokenKeyBytes, len(key))
	}
	if program == "" {
		return nil, errors.New("program: user tokens need the program's name (their audience)")
	}
	return &UserTokens{key: key, program: program, now: time.Now}, nil
}

// Mint signs a token for user, valid for ttl (DefaultUserTokenTTL when
// zero; at most MaxUserTokenTTL).
func (u *UserTokens) Mint(user string, ttl time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = DefaultUserTokenTTL
	}
	if ttl < time.Second || ttl > MaxUserTokenTTL {
		return "", time.Time{}, fmt.Errorf("ttlSeconds: must be between 1 and %d", int(MaxUserTokenTTL/time.Second))
	}
	now := u.now().Truncate(time.Second)
	exp := now.Add(ttl)
	claims := jwt.RegisteredClaims{
		Issuer:    UserTokenIssuer,
		Subject:   user,
		Audience:  jwt.ClaimStrings{u.program},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
	}
	signed, err := jwt.NewWithClaims(userTokenAlg, claims).SignedString(u.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign user token: %w", err)
	}
	return signed, exp, nil
}

// Verify checks a user token (signature, alg, iss, aud, exp, nbf) and
// returns its principal, confined to the token's user.
func (u *UserTokens) Verify(token string) (Principal, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return u.key, nil },
		jwt.WithValidMethods([]string{userTokenAlg.Alg()}),
		jwt.WithAudience(u.program),
		jwt.WithIssuer(UserTokenIssuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(u.now),
	)
	if err != nil {
		return Principal{}, fmt.Errorf("user token: %w", err)
	}
	if claims.Subject == "" {
		return Principal{}, errors.New("user token: no sub")
	}
	return Principal{Name: "user", Scopes: UserScopes, User: claims.Subject}, nil
}

// WithClock makes u mint and verify against now instead of the wall
// clock (tests, and an engine that runs on a simulated clock).
func (u *UserTokens) WithClock(now func() time.Time) *UserTokens {
	c := *u
	c.now = now
	return &c
}
