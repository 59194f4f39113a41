package api

import (
	"errors"
	"net/http"

	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
)

func (s *Server) routeStrength() {
	s.route("PUT "+contract.PathStrength, auth.ScopeTune, s.putStrength)
}

// putStrength answers PUT /v1/admin/strength: the operator's push of the
// tuned values it has just written to the program's ConfigMap, so that
// they run in seconds rather than after the kubelet's sync (service
// push.go; the file stays the durable source). Only the operator's tuning
// client holds the tune scope.
func (s *Server) putStrength(w http.ResponseWriter, r *http.Request) {
	var req contract.StrengthPush
	if _, ok := s.decodeBody(w, r, &req, false); !ok {
		return
	}
	res, err := s.svc.PushStrength(req.Strength, req.Generation)
	if fe, ok := errors.AsType[*config.FieldError](err); ok {
		s.reject(w, http.StatusBadRequest, "invalid", fe.Reason, fe.Field)
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	if res.Applied {
		s.log.Info("pushed strength in force", "strength", req.Strength.Value, "generation", res.Generation)
	}
	writeJSON(w, http.StatusOK, res)
}
