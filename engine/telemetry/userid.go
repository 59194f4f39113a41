package telemetry

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// UserIDPunctuation is the punctuation a user ID may hold after its first
// character, which is a letter or a digit.
const UserIDPunctuation = "-_.@+:~"

// ValidUserID checks that a client-supplied user ID is in its canonical
// form, so that two IDs which look alike are never two users:
//
//   - 1 to MaxUserIDBytes bytes of UTF-8, in Unicode normalization form C
//     (NFC): a decomposed "é" is refused, not silently merged;
//   - only letters, decimal digits, combining marks and UserIDPunctuation,
//     beginning with a letter or a digit: no spaces, no '/' or '%' (a path
//     segment never decodes to another path), no symbols;
//   - therefore no control characters (C0, DEL, C1 such as U+0085), no
//     bidirectional controls (U+202E, U+2066…), and no invisible or
//     default-ignorable characters (U+200B, U+2060, U+FEFF, U+3164…).
//
// The error names the offending character by code point and position,
// never the ID itself.
func ValidUserID(id string) error {
	switch {
	case id == "":
		return fieldErr("user", "is required")
	case len(id) > MaxUserIDBytes:
		return fieldErr("user", "longer than %d bytes", MaxUserIDBytes)
	case !utf8.ValidString(id):
		return fieldErr("user", "invalid UTF-8")
	}
	first := true
	for i, r := range id {
		if why := refusedInUserID(r, first); why != "" {
			return fieldErr("user", "%s at byte %d is not allowed in a user ID: %s", describeRune(r), i, why)
		}
		first = false
	}
	if !norm.NFC.IsNormalString(id) {
		return fieldErr("user", "not in Unicode normalization form C (NFC); send the NFC form of the ID")
	}
	return nil
}

// bidiControls are the characters that reorder text around them.
var bidiControls = []*unicode.RangeTable{unicode.Bidi_Control}

// refusedInUserID says why r may not stand in a user ID ("" if it may).
func refusedInUserID(r rune, first bool) string {
	switch {
	case unicode.IsControl(r):
		return "a control character"
	case unicode.IsOneOf(bidiControls, r):
		return "a bidirectional control character"
	case unicode.Is(unicode.Cf, r), unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r), unicode.Is(unicode.Variation_Selector, r):
		return "an invisible character"
	case unicode.IsSpace(r), unicode.Is(unicode.Z, r):
		return "white space"
	case unicode.IsLetter(r), unicode.IsDigit(r):
		return ""
	case first:
		return "a user ID begins with a letter or a digit"
	case unicode.Is(unicode.M, r), strings.ContainsRune(UserIDPunctuation, r):
		return ""
	case r == '/' || r == '%' || r == '\\':
		return "user IDs are single path segments and are never percent-decoded twice"
	}
	return "not a letter, a digit, a combining mark or one of " + UserIDPunctuation
}

func describeRune(r rune) string {
	if r > 0x20 && r < 0x7f {
		return fmt.Sprintf("%q (U+%04X)", r, r)
	}
	return fmt.Sprintf("U+%04X", r)
}
