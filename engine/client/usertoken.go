package client

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/attune-io/attune/engine/contract"
)

// MintUserToken asks the engine for a user token for user (POST
// /v1/users/{id}/tokens), valid for ttl (0: the engine's default, 15
// minutes; at most an hour). The client's own token needs the ingest or
// decide scope. Hand the token to the user's app, which then calls the
// engine directly; it may act for that user only.
func (c *Client) MintUserToken(ctx context.Context, user string, ttl time.Duration) (contract.UserToken, error) {
	path, err := userPath(user, "/tokens")
	if err != nil {
		return contract.UserToken{}, err
	}
	r := &request{method: http.MethodPost, path: path, safe: true, want: http.StatusOK}
	if ttl > 0 {
		if r.body, err = jsonBody(contract.UserTokenRequest{TTLSeconds: int64(ttl / time.Second)}); err != nil {
			return contract.UserToken{}, err
		}
		r.contentType = contract.ContentTypeJSON
	}
	var out contract.UserToken
	_, err = c.call(ctx, r, &out)
	return out, err
}

// UserTokenRefreshBefore is how long before its expiry a UserTokenSource
// mints the next token, so no request leaves with one about to lapse.
const UserTokenRefreshBefore = time.Minute

// UserToken is a TokenSource of user tokens for one user, minted through
// minter (a Client whose token holds ingest or decide) and minted again
// UserTokenRefreshBefore before each expires. A client built with it acts
// as that user: what a world server runs on the user's behalf, or a test
// of what a user's app may do.
func UserToken(minter *Client, user string, ttl time.Duration) *UserTokenSource {
	return &UserTokenSource{minter: minter, user: user, ttl: ttl, now: time.Now}
}

// UserTokenSource is the TokenSource of UserToken.
type UserTokenSource struct {
	minter *Client
	user   string
	ttl    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	current contract.UserToken
}

// Token returns the current user token, minting one when there is none or
// it expires within UserTokenRefreshBefore.
func (u *UserTokenSource) Token(ctx context.Context) (string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.current.Token != "" && u.now().Add(UserTokenRefreshBefore).Before(u.current.ExpiresAt) {
		return u.current.Token, nil
	}
	t, err := u.minter.MintUserToken(ctx, u.user, u.ttl)
	if err != nil {
		return "", err
	}
	u.current = t
	return t.Token, nil
}
