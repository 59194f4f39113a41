package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
)

func TestPrometheusAddressMustBeAllowed(t *testing.T) {
	none, err := controllers.ParsePrometheusAccess(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := controllers.ParsePrometheusAccess([]string{"https://prom.example.com/team-a", " http://10.0.0.5:9090 "}, "corp.internal")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		access  controllers.PrometheusAccess
		address string
		ok      bool
	}{
		{none, "http://prometheus.monitoring.svc:9090", true},
		{none, "https://prometheus.monitoring.svc.cluster.local/prom", true},
		{none, "http://Prometheus.Monitoring.SVC.cluster.local.:9090", true},
		{none, "http://prometheus.monitoring:9090", false}, // a short name falls back to public DNS
		{none, "http://prometheus.monitoring.svc.corp.internal", false},
		{allowed, "http://prometheus.monitoring.svc.corp.internal", true},
		{none, "http://kubernetes.default.svc", false},
		{none, "http://169.254.169.254/latest/meta-data", false},
		{none, "http://10.0.0.5:9090", false},
		{none, "http://[::1]:9090", false},
		{none, "http://evil.svc.example.com", false},
		{none, "http://a.b.c.svc", false},
		{none, "http://user:pw@prometheus.monitoring.svc", false},
		{none, "http://prometheus.monitoring.svc?x=1", false},
		{none, "gopher://prometheus.monitoring.svc", false},
		{none, "prometheus.monitoring.svc:9090", false},
		{allowed, "https://prom.example.com/team-a", true},
		{allowed, "https://prom.example.com/team-a/", true},
		{allowed, "https://prom.example.com:8443/team-a/sub", true},
		{allowed, "https://prom.example.com/team-ab", false},
		{allowed, "https://prom.example.com/", false},
		{allowed, "https://prom.example.com.evil.io/team-a", false},
		{allowed, "http://prom.example.com/team-a", false},
		{allowed, "http://10.0.0.5:9090/", true},
		{allowed, "http://10.0.0.5:9091", false},
	} {
		err := tc.access.Check(tc.address)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want allowed=%v", tc.address, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "spec.tuning.source.prometheus.address") {
			t.Errorf("%s: %v does not name the field", tc.address, err)
		}
	}
	for _, bad := range []string{"prom.example.com", "ftp://prom.example.com", "http://u:p@prom.example.com", "http://prom.example.com/?q=1"} {
		if _, err := controllers.ParsePrometheusAccess([]string{bad}, ""); err == nil {
			t.Errorf("allowed prefix %q accepted", bad)
		}
	}
}

func prometheusProgram(address string) *wellbeingv1alpha1.MeditationProgram {
	p := &wellbeingv1alpha1.MeditationProgram{ObjectMeta: metav1.ObjectMeta{Namespace: "plaza", Name: "calm"}}
	p.Spec.Tuning.Source = wellbeingv1alpha1.LossSource{Type: wellbeingv1alpha1.LossSourcePrometheus, Prometheus: &wellbeingv1alpha1.PrometheusSource{Address: address}}
	return p
}

// TestPrometheusAnswersNeverReachConditionsVerbatim: real servers on
// loopback answer what a hostile or misdirected endpoint would; the
// measurement error (which becomes the LossObserved condition) carries the
// class of the answer, never its body or its exact status, a redirect is
// not followed, and a disallowed address is not contacted at all.
func TestPrometheusAnswersNeverReachConditionsVerbatim(t *testing.T) {
	const secret = "hunter2-internal"
	var redirectTargetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		redirectTargetHits.Add(1)
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.5"]}]}}`)
	}))
	t.Cleanup(target.Close)
	for name, tc := range map[string]struct {
		handler http.HandlerFunc
		want    string
	}{
		"500 with a body": {func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, "db password "+secret)
		}, "HTTP 5xx"},
		"an HTML page": {func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusTeapot)
			fmt.Fprint(w, "<html>"+secret+"</html>")
		}, "HTTP 4xx"},
		"a Prometheus error": {func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"status":"error","errorType":"bad_data","error":"`+secret+`"}`)
		}, "bad_data, HTTP 4xx"},
		"an invented error type": {func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"status":"error","errorType":"`+secret+`","error":"x"}`)
		}, "an unknown error type"},
		"a value that is not a number": {func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"`+secret+`"]}]}}`)
		}, "not a finite number"},
		"a redirect": {func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/api/v1/query?"+r.URL.RawQuery, http.StatusFound)
		}, "redirect"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			reader := &controllers.PrometheusLossReader{Access: loopbackPrometheus}
			_, err := reader.Read(context.Background(), prometheusProgram(srv.URL), 11)
			var me *controllers.MeasurementError
			if !errors.As(err, &me) || me.Reason != wellbeingv1alpha1.ReasonMetricsUnavailable {
				t.Fatalf("err = %v, want MetricsUnavailable", err)
			}
			if !strings.Contains(me.Message, tc.want) {
				t.Errorf("message %q, want it to say %q", me.Message, tc.want)
			}
			// The server's own address may be named (its port may hold
			// any digits); nothing of its answer may.
			message := strings.ReplaceAll(me.Message, srv.URL, "")
			for _, leaked := range []string{secret, "500", "418", "400", "422", "302", "Found"} {
				if strings.Contains(message, leaked) {
					t.Errorf("message %q repeats %q from the answer", me.Message, leaked)
				}
			}
		})
	}
	if n := redirectTargetHits.Load(); n != 0 {
		t.Errorf("the redirect was followed (%d requests reached its target)", n)
	}

	// Without the loopback prefix, 127.0.0.1 is outside the cluster: the
	// operator refuses the address and sends nothing.
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	_, err := (&controllers.PrometheusLossReader{}).Read(context.Background(), prometheusProgram(srv.URL), 11)
	if err == nil || !strings.Contains(err.Error(), "allowedPrometheusURLs") || hits.Load() != 0 {
		t.Errorf("disallowed address: err = %v, %d requests sent", err, hits.Load())
	}
	u, _ := url.Parse(srv.URL)
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), u.Host) {
		t.Errorf("refusal %q should name the address", err)
	}
}
