package api

import "net/http"

// clientKey carries the authenticated client's name in a request's
// context.
type clientKey struct{}

// clientName names the client that sent r, as it authenticated
// ("read-write", a named client, "user"): what the consent ledger records
// as a change's source.
func clientName(r *http.Request) string {
	name, _ := r.Context().Value(clientKey{}).(string)
	return name
}
