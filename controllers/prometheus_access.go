package controllers

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// DefaultClusterDomain is the cluster's DNS domain unless told otherwise.
const DefaultClusterDomain = "cluster.local"

// PrometheusAccess says which addresses spec.tuning.source.prometheus.address
// may name, since the operator GETs them from inside the cluster (a
// tenant-set URL would otherwise reach anything the operator can: cloud
// metadata, the API server, other tenants' services).
//
//   - In the cluster: http(s) to a Service by its DNS name, a host ending
//     in .svc or .svc.<ClusterDomain> (prometheus.monitoring.svc:9090).
//     IP addresses and short names (prometheus.monitoring) do not count:
//     a short name falls back to public DNS. Nor does the API server's
//     Service, kubernetes.default.svc.
//   - Elsewhere: only an address under one of AllowedURLs (the operator's
//     --allowed-prometheus-urls, the chart's allowedPrometheusURLs): the
//     same scheme and host, the same port if the prefix names one, and a
//     path under the prefix's path (http://prom.example.com/team does not
//     admit http://prom.example.com.evil.io or /teammate). Default: none.
//
// Redirects are never followed, and what the server answers reaches the
// program's conditions only as a class (HTTP 5xx, not a Prometheus
// answer, the errorType), never as its body or exact status.
type PrometheusAccess struct {
	AllowedURLs   []*url.URL
	ClusterDomain string
}

// ParsePrometheusAccess checks the operator's allowed URL prefixes.
func ParsePrometheusAccess(prefixes []string, clusterDomain string) (PrometheusAccess, error) {
	a := PrometheusAccess{ClusterDomain: clusterDomain}
	for _, p := range prefixes {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		u, err := url.Parse(p)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return PrometheusAccess{}, fmt.Errorf("allowed Prometheus URL %q: want http(s)://host[:port][/path], without user, query or fragment", p)
		}
		u.Host = strings.ToLower(u.Host)
		a.AllowedURLs = append(a.AllowedURLs, u)
	}
	return a, nil
}

// Check refuses an address the operator may not query, saying why.
func (a PrometheusAccess) Check(address string) error {
	const field = "spec.tuning.source.prometheus.address"
	u, err := url.Parse(address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return fmt.Errorf("%s must be an http:// or https:// URL", field)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s must not carry a user, a query or a fragment", field)
	}
	if a.inCluster(u) {
		return nil
	}
	for _, allowed := range a.AllowedURLs {
		if underPrefix(u, allowed) {
			return nil
		}
	}
	domain := a.ClusterDomain
	if domain == "" {
		domain = DefaultClusterDomain
	}
	return fmt.Errorf("%s %s is outside the cluster and not under the operator's allowedPrometheusURLs: name a Service (*.svc or *.svc.%s) or ask the operator's administrator to allow the URL", field, u.Redacted(), domain)
}

func (a PrometheusAccess) inCluster(u *url.URL) bool {
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	domain := a.ClusterDomain
	if domain == "" {
		domain = DefaultClusterDomain
	}
	for _, suffix := range []string{".svc", ".svc." + strings.ToLower(domain)} {
		if name, ok := strings.CutSuffix(host, suffix); ok {
			// <service>.<namespace>, both DNS labels; not the API server.
			service, namespace, found := strings.Cut(name, ".")
			return found && dnsLabel(service) && dnsLabel(namespace) && name != "kubernetes.default"
		}
	}
	return false
}

func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// underPrefix: same scheme and host, the same port when the prefix names
// one (any port otherwise), and a path at or under the prefix's, on a '/'
// boundary.
func underPrefix(u, prefix *url.URL) bool {
	if u.Scheme != prefix.Scheme || !strings.EqualFold(u.Hostname(), prefix.Hostname()) {
		return false
	}
	if prefix.Port() != "" && u.Port() != prefix.Port() {
		return false
	}
	base := strings.TrimSuffix(prefix.EscapedPath(), "/")
	path := u.EscapedPath()
	return base == "" || path == base || strings.HasPrefix(path, base+"/")
}

// errRedirect refuses every redirect: a permitted Prometheus must not send
// the operator somewhere that is not.
var errRedirect = errors.New("the Prometheus server answered with a redirect, which the operator does not follow")

// noRedirects is client with redirects refused.
func noRedirects(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	copied := *c
	copied.CheckRedirect = func(*http.Request, []*http.Request) error { return errRedirect }
	return &copied
}

// prometheusErrorTypes are the errorType values of the Prometheus HTTP
// API: the only part of an error answer that reaches a condition.
var prometheusErrorTypes = []string{"timeout", "canceled", "execution", "bad_data", "internal", "unavailable", "not_found", "not_acceptable"}
