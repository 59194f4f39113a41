package telemetry

import (
	"strings"
	"testing"
)

func TestCanonicalUserIDs(t *testing.T) {
	for _, id := range []string{
		"u-123", "player_1", "victim-1", "user@example.com", "steam:7656119", "a.b+c~d",
		"Ünïcödé", "山田太郎", "ذكاء", "देवनागरी", "0", strings.Repeat("x", MaxUserIDBytes),
	} {
		if err := ValidUserID(id); err != nil {
			t.Errorf("%q refused: %v", id, err)
		}
	}
	for _, tc := range []struct{ id, want string }{
		{"", "is required"},
		{strings.Repeat("x", MaxUserIDBytes+1), "longer than"},
		{"bad\xffutf8", "invalid UTF-8"},
		{"victim-1\u200b", "U+200B at byte 8 is not allowed in a user ID: an invisible character"},
		{"victim-1\u202e", "U+202E at byte 8 is not allowed in a user ID: a bidirectional control character"},
		{"victim-1\u0085", "U+0085 at byte 8 is not allowed in a user ID: a control character"},
		{"victim\u20601", "an invisible character"},
		{"\ufeffvictim-1", "an invisible character"},
		{"victim\u31641", "an invisible character"}, // Hangul filler, a letter that draws nothing
		{"victim-1\ufe0f", "an invisible character"},
		{"tab\there", "a control character"},
		{"a b", "white space"},
		{"a\u00a0b", "white space"},
		{"../../admin", `'.' (U+002E) at byte 0 is not allowed in a user ID: a user ID begins with a letter or a digit`},
		{"x/../admin", `'/' (U+002F) at byte 1 is not allowed in a user ID: user IDs are single path segments`},
		{"..%2F..%2Fadmin", "begins with a letter or a digit"},
		{"x%2Fadmin", `'%' (U+0025) at byte 1`},
		{"e\u0301", "NFC"}, // e + combining acute: the NFC form is é
		{"\u0301e", "begins with a letter or a digit"},
		{"a😀", "not a letter, a digit"},
		{"a<script>", `'<' (U+003C)`},
	} {
		err := ValidUserID(tc.id)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to say %q", tc.id, err, tc.want)
		}
		if err != nil && len(tc.id) > 3 && strings.Contains(err.Error(), tc.id) {
			t.Errorf("%q: the error repeats the ID: %v", tc.id, err)
		}
	}
}
