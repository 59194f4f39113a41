package store

import (
	"strings"
	"testing"
)

// TestSupportedPostgres: servers before 13 are refused with their version
// and the reason; 13 and later pass. (The store tests run on the Debian
// server installed here, so an old server cannot be started.)
func TestSupportedPostgres(t *testing.T) {
	for num, want := range map[int]string{90624: "9.6 is too old", 120017: "12.17 is too old", 130000: "", 150018: "", 170002: ""} {
		err := supportedPostgres(num)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "pg_xact_status")) {
			t.Errorf("server_version_num %d: %v, want %q", num, err, want)
		}
	}
}
