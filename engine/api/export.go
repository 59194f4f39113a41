package api

import (
	"net/http"

	"github.com/attune-io/attune/engine/auth"
)

// exportAllowed decides who may read a user's export: a caller with the
// export scope (the route requires it; a client, or a user token for its
// own user only, which the route also checks). Checked again here so the
// handler stays safe wherever it is mounted.
func exportAllowed(r *http.Request, userID string) bool {
	p := principalOf(r)
	return p.Has(auth.ScopeExport) && (p.User == "" || p.User == userID)
}

// getExport answers GET /v1/users/{id}/export: everything stored about the
// user, decrypted (contract.UserExport).
func (s *Server) getExport(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r, s)
	if !ok {
		return
	}
	if !exportAllowed(r, id) {
		s.reject(w, http.StatusForbidden, "export_scope", "this token may not read user exports (it needs the export scope)", "Authorization")
		return
	}
	export, err := s.svc.Export(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	// A user's data: not to be kept by caches between the engine and the
	// caller.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, export)
}
